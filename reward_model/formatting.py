"""The one place where (prompt, response) or chat messages become model input ids.

Training and serving both call `InputFormatter.encode`, so an item is tokenized identically in both.
Truncation never cuts the end of the response, where a reward model reads its verdict: the prompt
loses tokens from the left first, and only if the response alone is too long does its start go.
Limits come before work: a prompt or response far longer than the limit could ever keep is cut to its
last `WINDOW_CHARS_PER_TOKEN` characters per token of the limit before it is tokenized, so a 10 MB item
costs what a long one does (see `_window`).
This module imports neither FastAPI nor the trainer.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reward_model.errors import InputTooLong, InvalidInput

WINDOW_CHARS_PER_TOKEN = 32
"""A prompt or response over `max_length` times this many characters is cut to that many, from its end
(where truncation keeps tokens), before tokenizing. English averages about 4 characters a token."""
_WINDOW_MARGIN_TOKENS = 16
"""A window is used only if it holds this many tokens more than truncation keeps from it: the first
word of a window may tokenize differently from the same word in the whole text."""

PLAIN_ROLE_NAMES = {"user": "Human", "assistant": "Assistant", "system": "System"}
"""The plain format is the HH-RLHF transcript format: `\\n\\nHuman: ...\\n\\nAssistant: ...`."""


@dataclass(frozen=True, slots=True)
class RewardInput:
    """One thing to score: a conversation whose last message is the assistant turn, or formatted text."""

    messages: tuple[tuple[str, str], ...] = ()
    text: str | None = None
    prompt: str | None = None
    """For `text`: the prompt it starts with, when the caller says (OpenRLHF's `prompts`)."""

    @classmethod
    def from_prompt_response(cls, prompt: str | Sequence[Mapping[str, str]], response: str) -> RewardInput:
        """A prompt (a user string or a message list) followed by the response being scored."""
        prompt_messages = [("user", prompt)] if isinstance(prompt, str) else _as_pairs(prompt)
        return cls(messages=(*prompt_messages, ("assistant", response)))

    @classmethod
    def from_messages(cls, messages: Sequence[Mapping[str, str]]) -> RewardInput:
        """A conversation whose last message is the assistant turn being scored."""
        pairs = _as_pairs(messages)
        if not pairs or pairs[-1][0] != "assistant":
            raise InvalidInput("the last message must have role 'assistant': it is the turn being scored")
        return cls(messages=tuple(pairs))

    @property
    def chars(self) -> int:
        """Characters of text in the item, which bounds the work of tokenizing it."""
        return len(self.text or "") + sum(len(content) for _, content in self.messages)

    @classmethod
    def raw(cls, text: str, prompt: str | None = None) -> RewardInput:
        """Text that is already fully formatted, scored as it is (the OpenRLHF protocol); `prompt`, if
        given, is the part of it that is the prompt."""
        return cls(text=text, prompt=prompt)


def _as_pairs(messages: Sequence[Mapping[str, str]]) -> list[tuple[str, str]]:
    return [(m["role"], m["content"]) for m in messages]


@dataclass(frozen=True, slots=True)
class EncodedInput:
    """Model input ids for one item, and what truncation did to it."""

    input_ids: list[int]
    num_tokens: int
    """Tokens the item had before truncation, special tokens included; for an item cut to its window
    before tokenizing (`WINDOW_CHARS_PER_TOKEN`), the window's tokens: a lower bound."""
    truncated: bool
    response_tokens: int = 0
    """Tokens of the response in `input_ids` (all of a formatted text whose prompt is not known)."""
    prompt_tokens: int | None = None
    """How many leading ids are prompt alone: the tokens that end before the response starts (a token
    that spans the boundary is the response's). None when the item does not know its prompt."""


FormatType = Literal["auto", "chat_template", "plain"]


class InputFormatter:
    """Formats and truncates items for one tokenizer; `encode` is the single entry point."""

    def __init__(self, tokenizer: Any, *, input_format: FormatType, max_length: int, truncate: bool = True):
        self.tokenizer = tokenizer
        has_template = bool(getattr(tokenizer, "chat_template", None))
        if input_format == "chat_template" and not has_template:
            raise ValueError("input_format is 'chat_template' but the tokenizer has no chat template")
        self.use_chat_template = input_format == "chat_template" or (input_format == "auto" and has_template)
        self.max_length = max_length
        self.truncate = truncate
        self.prefix, self.suffix = _special_wrapping(tokenizer)
        self.bos_id: int | None = getattr(tokenizer, "bos_token_id", None)
        if max_length <= len(self.prefix) + len(self.suffix):
            raise ValueError(f"max_length {max_length} leaves no room for content")

    @property
    def format_name(self) -> str:
        """`chat_template` or `plain`: what `auto` resolved to for this tokenizer."""
        return "chat_template" if self.use_chat_template else "plain"

    def render(self, item: RewardInput) -> tuple[str, int | None]:
        """Return the formatted text and the character offset where the scored response starts (None:
        already formatted text whose prompt is not given)."""
        if item.text is not None:
            text = self._strip_padding(item.text)
            prompt = None if item.prompt is None else self._strip_padding(item.prompt)
            return text, len(prompt) if prompt and text.startswith(prompt) else None
        if self.use_chat_template:
            return self._render_chat(item.messages)
        return render_plain(item.messages)

    def _strip_padding(self, text: str) -> str:
        """Drop pad tokens around an already formatted text (OpenRLHF decodes left-padded rollouts).

        Leading pads never carry meaning. Trailing ones are kept when pad doubles as eos, since a
        trailing eos can be part of the format.
        """
        pad = getattr(self.tokenizer, "pad_token", None)
        if not pad:
            return text
        while text.startswith(pad):
            text = text[len(pad) :]
        if pad != getattr(self.tokenizer, "eos_token", None):
            while text.endswith(pad):
                text = text[: -len(pad)]
        return text

    def _render_chat(self, messages: tuple[tuple[str, str], ...]) -> tuple[str, int]:
        conversation = [{"role": role, "content": content} for role, content in messages]
        try:
            full = self.tokenizer.apply_chat_template(conversation, tokenize=False)
            prompt = (  # a lone assistant turn has no prompt: all of it is the response
                self.tokenizer.apply_chat_template(
                    conversation[:-1], tokenize=False, add_generation_prompt=True
                )
                if len(conversation) > 1
                else ""
            )
        except Exception as exc:  # jinja raises its own errors for conversations a template rejects
            raise InvalidInput(f"the chat template rejected the messages: {exc}") from exc
        if full.startswith(prompt):
            return full, len(prompt)
        # Some templates rewrite earlier turns; fall back to the last occurrence of the response.
        return full, max(full.rfind(messages[-1][1]), 0)

    def encode(self, items: Sequence[RewardInput]) -> list[EncodedInput]:
        """Format, tokenize and truncate items; the only way text becomes model input in this project."""
        rendered = [self.render(item) for item in items]
        windows = [self._window(text, start) for text, start in rendered]
        tokenized = self._tokenize([text for text, _ in windows])
        encoded = []
        for (ids, offsets), window, whole in zip(tokenized, windows, rendered, strict=True):
            cut = window != whole
            if cut and not self._window_suffices(offsets, window, whole):
                (ids, offsets), window, cut = self._tokenize([whole[0]])[0], whole, False
            encoded.append(self._fit(ids, offsets, window[1], cut))
        return encoded

    def _tokenize(self, texts: list[str]) -> list[tuple[list[int], list[tuple[int, int]]]]:
        batch = self.tokenizer(
            texts,
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            verbose=False,  # over-long texts are expected: `_fit` truncates them right after
        )
        return list(zip(batch["input_ids"], batch["offset_mapping"], strict=True))

    def _window(self, text: str, response_start: int | None) -> tuple[str, int | None]:
        """Cut the prompt and the response to their last `max_length x WINDOW_CHARS_PER_TOKEN`
        characters, starting at a whitespace character where one is near; keep a leading BOS."""
        width = self.max_length * WINDOW_CHARS_PER_TOKEN
        start = response_start or 0
        prompt, response = text[:start], text[start:]
        if len(prompt) <= width and len(response) <= width:
            return text, response_start
        bos = getattr(self.tokenizer, "bos_token", None) or ""
        head = bos if bos and prompt.startswith(bos) and len(prompt) > width else ""
        prompt = head + _last_chars(prompt, width)
        return prompt + _last_chars(response, width), None if response_start is None else len(prompt)

    def _window_suffices(
        self, offsets: list[tuple[int, int]], window: tuple[str, int | None], whole: tuple[str, int | None]
    ) -> bool:
        """Whether truncation keeps only tokens of the window that tokenize as in the whole text."""
        budget = self.max_length - len(self.prefix) - len(self.suffix)
        start = window[1] or 0
        response = sum(1 for _, end in offsets if end > start)
        if response >= budget + _WINDOW_MARGIN_TOKENS:
            return True  # only response tokens are kept, all from well inside its window
        response_cut = len(window[0]) - start < len(whole[0]) - (whole[1] or 0)
        prompt = len(offsets) - response
        return not response_cut and prompt >= budget - response + _WINDOW_MARGIN_TOKENS

    def filler(self, length: int) -> list[int]:
        """Input ids of `length` tokens (special tokens included) of one repeated word, for warm-up."""
        word = self.tokenizer("hello", add_special_tokens=False)["input_ids"][:1]
        content = max(1, min(length, self.max_length) - len(self.prefix) - len(self.suffix))
        return self.prefix + (word or [0]) * content + self.suffix

    def _fit(
        self, body: list[int], offsets: list[tuple[int, int]], response_start: int | None, cut: bool = False
    ) -> EncodedInput:
        prefix = self.prefix
        if body and self.bos_id is not None and body[0] == self.bos_id:
            # The text carries its own BOS (a chat template, or an OpenRLHF query). Never add a second,
            # and protect it from truncation like the tokenizer's own special tokens.
            body, offsets = body[1:], offsets[1:]
            if not prefix or prefix[-1] != self.bos_id:
                prefix = [*prefix, self.bos_id]
        num_tokens = len(prefix) + len(body) + len(self.suffix)
        if num_tokens == 0:
            raise InvalidInput("an item has nothing to score: no text, and the model adds no special tokens")
        start = response_start or 0
        split = next((i for i, (_, end) in enumerate(offsets) if end > start), len(body))
        known = None if response_start is None else len(prefix)
        if num_tokens <= self.max_length:
            prompt_tokens = None if known is None else known + split
            return EncodedInput(
                prefix + body + self.suffix, num_tokens, False, len(body) - split, prompt_tokens
            )
        if not self.truncate:
            count = f"more than {num_tokens}" if cut else str(num_tokens)
            raise InputTooLong(
                f"an item has {count} tokens, over the limit of {self.max_length}, and truncation is off"
            )
        budget = self.max_length - len(prefix) - len(self.suffix)
        prompt_ids, response_ids = body[:split], body[split:]
        if len(response_ids) >= budget:
            kept, kept_prompt = response_ids[len(response_ids) - budget :], 0
        else:
            kept_prompt = min(len(prompt_ids), budget - len(response_ids))
            kept = prompt_ids[len(prompt_ids) - kept_prompt :] + response_ids
        prompt_tokens = None if known is None else known + kept_prompt
        response_tokens = len(kept) - kept_prompt
        return EncodedInput(prefix + kept + self.suffix, num_tokens, True, response_tokens, prompt_tokens)


def _last_chars(part: str, width: int) -> str:
    if len(part) <= width:
        return part
    start = len(part) - width
    near = part[start : start + 256]
    space = next((i for i, char in enumerate(near) if char.isspace()), 0)
    return part[start + space :]


def render_plain(messages: Sequence[tuple[str, str]]) -> tuple[str, int]:
    """Render a conversation in the HH-RLHF transcript format; return text and response start."""
    prompt = "".join(f"\n\n{_role_name(role)}: {content}" for role, content in messages[:-1])
    prompt += f"\n\n{_role_name(messages[-1][0])}:"
    return f"{prompt} {messages[-1][1]}", len(prompt)


def _role_name(role: str) -> str:
    return PLAIN_ROLE_NAMES.get(role, role.capitalize())


def _special_wrapping(tokenizer: Any) -> tuple[list[int], list[int]]:
    """The special tokens the tokenizer adds before and after a single sequence ([CLS]/[SEP], BOS)."""
    bare = tokenizer("x", add_special_tokens=False)["input_ids"]
    wrapped = tokenizer("x", add_special_tokens=True)["input_ids"]
    for start in range(len(wrapped) - len(bare) + 1):
        if wrapped[start : start + len(bare)] == bare:
            return list(wrapped[:start]), list(wrapped[start + len(bare) :])
    raise ValueError("cannot locate the content inside the tokenizer's special-token wrapping")
