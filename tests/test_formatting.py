"""The one input formatter: rendering, special tokens, and truncation that keeps the response end."""

from __future__ import annotations

import pytest

from reward_model.errors import InputTooLong, InvalidInput
from reward_model.formatting import InputFormatter, RewardInput, render_plain
from tests.tiny_models import bert_tokenizer, llama_tokenizer


@pytest.fixture(scope="module")
def bert_tok():
    return bert_tokenizer()


@pytest.fixture(scope="module")
def llama_tok():
    return llama_tokenizer()


def test_plain_format_is_the_hh_transcript():
    item = RewardInput.from_prompt_response(
        [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "bye"},
        ],
        "see you",
    )
    text, start = render_plain(item.messages)
    assert text == "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: bye\n\nAssistant: see you"
    assert text[start:] == " see you"


def test_string_prompt_is_one_user_turn():
    item = RewardInput.from_prompt_response("hi", "hello")
    assert item.messages == (("user", "hi"), ("assistant", "hello"))


def test_messages_must_end_with_the_assistant_turn():
    with pytest.raises(InvalidInput, match="last message must have role 'assistant'"):
        RewardInput.from_messages([{"role": "user", "content": "hi"}])


def test_untruncated_ids_equal_the_tokenizers_own(bert_tok):
    fmt = InputFormatter(bert_tok, input_format="auto", max_length=128)
    item = RewardInput.from_prompt_response("how do I bake bread?", "mix flour and water")
    text, _ = fmt.render(item)
    [encoded] = fmt.encode([item])
    assert encoded.input_ids == bert_tok(text)["input_ids"]
    assert encoded.input_ids[0] == bert_tok.cls_token_id and encoded.input_ids[-1] == bert_tok.sep_token_id
    assert encoded.truncated is False and encoded.num_tokens == len(encoded.input_ids)


def test_truncation_cuts_the_prompt_from_the_left_and_keeps_the_response(bert_tok):
    response = "the capital of france is paris"
    fmt = InputFormatter(bert_tok, input_format="plain", max_length=24)
    item = RewardInput.from_prompt_response("the quick brown fox jumps over the lazy dog " * 5, response)
    [encoded] = fmt.encode([item])
    full = InputFormatter(bert_tok, input_format="plain", max_length=4096).encode([item])[0].input_ids
    response_ids = bert_tok(" " + response, add_special_tokens=False)["input_ids"]
    assert encoded.truncated and len(encoded.input_ids) == 24
    assert encoded.num_tokens == len(full) > 24
    # [CLS] + the last prompt tokens + the whole response + [SEP]
    assert encoded.input_ids[0] == bert_tok.cls_token_id and encoded.input_ids[-1] == bert_tok.sep_token_id
    assert encoded.input_ids[-1 - len(response_ids) : -1] == response_ids
    assert encoded.input_ids[1:-1] == full[len(full) - 23 : -1]


def test_a_response_longer_than_the_limit_loses_its_start_not_its_end(bert_tok):
    response = " ".join(str(i % 10) for i in range(60)) + " the end"
    fmt = InputFormatter(bert_tok, input_format="plain", max_length=16)
    [encoded] = fmt.encode([RewardInput.from_prompt_response("hi", response)])
    response_ids = bert_tok(response, add_special_tokens=False)["input_ids"]
    assert encoded.truncated and len(encoded.input_ids) == 16
    assert encoded.input_ids[1:-1] == response_ids[-14:]
    end_ids = bert_tok("the end", add_special_tokens=False)["input_ids"]
    assert encoded.input_ids[-1 - len(end_ids) : -1] == end_ids


def test_raw_text_is_truncated_from_the_left(bert_tok):
    fmt = InputFormatter(bert_tok, input_format="plain", max_length=10)
    text = "one two three four five six seven eight nine ten eleven twelve"
    [encoded] = fmt.encode([RewardInput.raw(text)])
    body = bert_tok(text, add_special_tokens=False)["input_ids"]
    assert encoded.input_ids == [bert_tok.cls_token_id, *body[-8:], bert_tok.sep_token_id]


def test_truncation_off_refuses_long_items(bert_tok):
    fmt = InputFormatter(bert_tok, input_format="plain", max_length=10, truncate=False)
    with pytest.raises(InputTooLong, match="over the limit of 10"):
        fmt.encode([RewardInput.from_prompt_response("a long prompt " * 10, "ok")])


def test_chat_template_is_used_and_bos_is_never_doubled(llama_tok):
    fmt = InputFormatter(llama_tok, input_format="auto", max_length=256)
    assert fmt.format_name == "chat_template"
    item = RewardInput.from_prompt_response("hi", "hello")
    text, start = fmt.render(item)
    assert text == "<s><|user|>hi</s><|assistant|>hello</s>"
    assert text[start:] == "hello</s>"
    [encoded] = fmt.encode([item])
    bos = llama_tok.bos_token_id
    assert encoded.input_ids[0] == bos and encoded.input_ids[1] != bos
    assert llama_tok(text)["input_ids"][:2] == [bos, bos]  # what a naive tokenizer call would do


def test_raw_query_that_starts_with_bos_keeps_one_bos(llama_tok):
    fmt = InputFormatter(llama_tok, input_format="auto", max_length=256)
    with_bos, without_bos = fmt.encode([RewardInput.raw("<s>hello there"), RewardInput.raw("hello there")])
    assert with_bos.input_ids == without_bos.input_ids


def test_chat_template_truncation_keeps_the_response_and_its_end_of_turn(llama_tok):
    fmt = InputFormatter(llama_tok, input_format="chat_template", max_length=20)
    item = RewardInput.from_prompt_response("tell me about bread " * 10, "mix flour")
    [encoded] = fmt.encode([item])
    tail = llama_tok("mix flour</s>", add_special_tokens=False)["input_ids"]
    assert encoded.truncated and len(encoded.input_ids) == 20
    assert encoded.input_ids[0] == llama_tok.bos_token_id
    assert encoded.input_ids[-len(tail) :] == tail


def test_plain_format_can_be_forced_on_a_chat_tokenizer(llama_tok):
    fmt = InputFormatter(llama_tok, input_format="plain", max_length=256)
    text, _ = fmt.render(RewardInput.from_prompt_response("hi", "hello"))
    assert text == "\n\nHuman: hi\n\nAssistant: hello"


def test_chat_template_required_but_missing_is_an_error(bert_tok):
    with pytest.raises(ValueError, match="no chat template"):
        InputFormatter(bert_tok, input_format="chat_template", max_length=64)


def test_padding_around_a_raw_query_is_ignored(bert_tok):
    fmt = InputFormatter(bert_tok, input_format="plain", max_length=64)
    padded, clean = fmt.encode(
        [RewardInput.raw("[PAD][PAD]hello there[PAD]"), RewardInput.raw("hello there")]
    )
    assert padded.input_ids == clean.input_ids


def test_a_trailing_pad_that_is_also_eos_is_kept():
    tokenizer = llama_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # what the runner does for causal models without a pad
    fmt = InputFormatter(tokenizer, input_format="auto", max_length=64)
    [encoded] = fmt.encode([RewardInput.raw("</s></s><s>hi</s>")])
    assert encoded.input_ids == tokenizer("<s>hi</s>", add_special_tokens=False)["input_ids"]


def test_the_prompt_boundary_counts_the_tokens_before_the_response(llama_tok):
    fmt = InputFormatter(llama_tok, input_format="plain", max_length=64)
    item = RewardInput.from_prompt_response("how do I bake bread?", "mix flour and water")
    [encoded] = fmt.encode([item])
    text, start = fmt.render(item)
    prompt_ids = llama_tok(text[:start], add_special_tokens=True)["input_ids"]
    assert encoded.prompt_tokens == len(prompt_ids)  # BOS and the prompt, up to "Assistant:"
    assert encoded.input_ids[: encoded.prompt_tokens] == prompt_ids


def test_truncation_keeps_the_prompt_boundary_on_the_kept_tokens(llama_tok):
    fmt = InputFormatter(llama_tok, input_format="plain", max_length=24)
    item = RewardInput.from_prompt_response("what is two plus two? " * 6, "four")
    [encoded] = fmt.encode([item])
    [whole] = InputFormatter(llama_tok, input_format="plain", max_length=512).encode([item])
    assert encoded.truncated and encoded.prompt_tokens is not None and whole.prompt_tokens is not None
    response = len(whole.input_ids) - whole.prompt_tokens
    assert encoded.prompt_tokens == 24 - response  # the kept prompt tokens, BOS included


def test_raw_text_knows_its_prompt_only_when_given(llama_tok):
    fmt = InputFormatter(llama_tok, input_format="plain", max_length=64)
    prompt = "\n\nHuman: hi\n\nAssistant:"
    items = [RewardInput.raw(prompt + " hello"), RewardInput.raw(prompt + " hello", prompt)]
    unknown, known, mismatched = fmt.encode([*items, RewardInput.raw("x", prompt)])
    assert unknown.prompt_tokens is None and mismatched.prompt_tokens is None
    assert known.prompt_tokens == len(llama_tok(prompt)["input_ids"])


def test_split_points_use_the_prompt_boundary_or_the_common_prefix_of_unknown_items():
    from reward_model.formatting import EncodedInput
    from reward_model.prefix_sharing import MIN_SHARED_PREFIX as M
    from reward_model.prefix_sharing import split_points

    def item(ids: list[int], prompt: int | None) -> EncodedInput:
        return EncodedInput(ids, len(ids), False, prompt_tokens=prompt)

    long = list(range(M + 10))
    assert split_points([item(long, M + 2)]) == [M + 2]  # known: its own boundary, alone or not
    assert split_points([item(long, M - 1)]) == [0]  # too short to be worth a pass of its own
    assert split_points([item(long, len(long))]) == [len(long) - 1]  # one token stays to read
    unknown = [item([*long, 1, 2], None), item([*long, 3], None)]
    assert split_points(unknown) == [len(long), len(long)]
    assert split_points(unknown[:1]) == [0]  # nothing to share with


def _whole_and_windowed(tok, item: RewardInput, monkeypatch: pytest.MonkeyPatch, **options):
    formatter = InputFormatter(tok, input_format="auto", max_length=24, **options)
    windowed = formatter.encode([item])[0]
    monkeypatch.setattr("reward_model.formatting.WINDOW_CHARS_PER_TOKEN", 10**9)  # never cut
    return formatter.encode([item])[0], windowed


WORDS = " ".join(f"word{i % 97} and" for i in range(20_000))  # ~200k characters


@pytest.mark.parametrize("tokenizer", ["bert_tok", "llama_tok"])
@pytest.mark.parametrize(
    ("item", "always_cut"),
    [
        (RewardInput.from_prompt_response(WORDS, "the short answer"), True),  # a huge prompt
        (RewardInput.from_prompt_response("a question", WORDS), True),  # a huge response
        (RewardInput.from_prompt_response(WORDS, WORDS), True),
        (RewardInput.raw(WORDS), True),
        # mostly whitespace, which some tokenizers drop: the window may hold too few tokens, and then
        # the whole text is tokenized
        (RewardInput.from_prompt_response(WORDS, "x" * 30 + " " * 5000 + "end"), False),
    ],
)
def test_huge_items_are_cut_before_tokenizing_and_keep_the_same_tokens(
    tokenizer: str,
    item: RewardInput,
    always_cut: bool,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
):
    whole, windowed = _whole_and_windowed(request.getfixturevalue(tokenizer), item, monkeypatch)
    if always_cut:
        assert windowed.num_tokens < whole.num_tokens / 10
    assert windowed.input_ids == whole.input_ids
    assert windowed.prompt_tokens == whole.prompt_tokens
    assert windowed.truncated and whole.truncated
    assert 24 < windowed.num_tokens <= whole.num_tokens  # a lower bound once cut


def test_a_huge_item_without_truncation_is_refused_from_its_window(bert_tok):
    formatter = InputFormatter(bert_tok, input_format="plain", max_length=24, truncate=False)
    with pytest.raises(InputTooLong, match=r"^an item has more than \d+ tokens, over the limit of 24"):
        formatter.encode([RewardInput.from_prompt_response("hi", WORDS)])
