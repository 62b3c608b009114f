"""Preference data: read JSONL, JSON or Parquet (gzip too) into comparison groups, loudly.

Accepted row formats:
- `{prompt, chosen, rejected}` with strings, or chat message lists for chosen/rejected;
- HH-RLHF transcripts `{chosen, rejected}`, split where the two stop sharing text, at the last
  `\\n\\nAssistant:` before that point, into the shared prompt and the two responses;
- chat conversations `{chosen: [...], rejected: [...]}` without a prompt: the shared leading
  messages are the prompt and the last assistant turns are the responses;
- rankings `{prompt, responses, ranking | scores}`, expanded into all K-choose-2 pairs;
- an optional per-pair `margin`.

A bad row stops the run with its file and line, or is skipped and counted with `skip_invalid`.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import itertools
import json
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from reward_model.formatting import InputFormatter, RewardInput

ASSISTANT_TAG = "\n\nAssistant:"
_TURN = re.compile(r"\n\n(Human|Assistant): ?")
_ROLES = {"Human": "user", "Assistant": "assistant"}

Messages = tuple[tuple[str, str], ...]


class DataError(ValueError):
    """A row that cannot be trained on; the message starts with `file:line:`."""


@dataclass(frozen=True)
class PreferenceGroup:
    """One prompt, its candidate responses, and (winner, loser, margin) index pairs among them."""

    prompt: Messages
    responses: tuple[str, ...]
    pairs: tuple[tuple[int, int, float], ...]
    source: str

    def inputs(self) -> list[RewardInput]:
        """The responses as scoring inputs, through the project's one formatter."""
        prompt = [{"role": r, "content": c} for r, c in self.prompt]
        return [RewardInput.from_prompt_response(prompt, response) for response in self.responses]

    @property
    def row_hash(self) -> str:
        """Identity of the comparison, for detecting evaluation rows that were trained on."""
        canonical = json.dumps([self.prompt, sorted(self.responses)], ensure_ascii=False)
        return hashlib.sha256(canonical.encode()).hexdigest()[:24]


@dataclass
class LoadStats:
    """What loading read, kept and skipped, per reason; written into the checkpoint's provenance."""

    rows: int = 0
    groups: int = 0
    pairs: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    files: dict[str, dict[str, Any]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary."""
        return {
            "rows": self.rows,
            "groups": self.groups,
            "pairs": self.pairs,
            "skipped": dict(self.skipped),
            "files": self.files,
        }


def file_sha256(path: Path) -> str:
    """Hash of a data file, for provenance."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line or row number, row) from .jsonl, .json or .parquet files, gzipped or not."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".parquet"):
        import pyarrow.parquet as pq

        source = io.BytesIO(gzip.decompress(path.read_bytes())) if path.name.endswith(".gz") else path
        for number, row in enumerate(pq.read_table(source).to_pylist(), start=1):
            yield number, row
        return
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as fh:  # type: ignore[operator]
        if name.endswith(".json"):
            data = json.load(fh)
            rows = data if isinstance(data, list) else data.get("data", data.get("rows"))
            if not isinstance(rows, list):
                raise DataError(f"{path}: a .json file must hold a list of rows (or {{'data': [...]}})")
            yield from enumerate(rows, start=1)
            return
        for number, line in enumerate(fh, start=1):
            if line.strip():
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(f"{path}:{number}: not valid JSON ({exc.msg})") from exc


def split_transcript(chosen: str, rejected: str) -> tuple[str, str, str]:
    """Split two HH transcripts into (shared prompt, chosen response, rejected response).

    The prompt ends at the last `\\n\\nAssistant:` inside the text both share: a response may itself
    contain that tag, so splitting each transcript at its own last tag would be wrong.
    """
    shared = 0
    for a, b in zip(chosen, rejected, strict=False):
        if a != b:
            break
        shared += 1
    end = chosen.rfind(ASSISTANT_TAG, 0, shared)
    if end < 0:
        raise ValueError("the transcripts share no '\\n\\nAssistant:' turn")
    cut = end + len(ASSISTANT_TAG)
    return chosen[:cut], chosen[cut:].strip(), rejected[cut:].strip()


def transcript_messages(prompt: str) -> Messages:
    """Turn `\\n\\nHuman: ...\\n\\nAssistant:` text into (role, content) messages, dropping the open tag."""
    parts = _TURN.split(prompt)
    messages = [
        (_ROLES[role], content.strip()) for role, content in zip(parts[1::2], parts[2::2], strict=True)
    ]
    if messages and messages[-1] == ("assistant", ""):
        messages.pop()
    if parts[0].strip() or not messages:
        raise ValueError("the prompt is not a '\\n\\nHuman: ...' transcript")
    return tuple(messages)


def _as_messages(value: Any, what: str) -> Messages:
    if isinstance(value, str):
        return (("user", value),)
    if isinstance(value, list) and all(isinstance(m, dict) and "role" in m and "content" in m for m in value):
        return tuple((str(m["role"]), str(m["content"])) for m in value)
    raise ValueError(f"{what} must be a string or a list of {{role, content}} messages")


def _response(value: Any, what: str) -> tuple[Messages, str]:
    """A response given as a string, or as messages whose last one is the assistant turn."""
    if isinstance(value, str):
        return (), value
    messages = _as_messages(value, what)
    if messages[-1][0] != "assistant":
        raise ValueError(f"the last message of {what} must be the assistant turn")
    return messages[:-1], messages[-1][1]


def parse_row(row: Any, source: str) -> PreferenceGroup:
    """One row in any accepted format to a PreferenceGroup; raises DataError naming the source."""
    try:
        group = _parse(row, source)
    except DataError:
        raise
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise DataError(f"{source}: {exc}") from exc
    for text in (*group.responses, *(c for _, c in group.prompt)):
        if not text.strip():
            raise DataError(f"{source}: empty text")
    for winner, loser, _ in group.pairs:
        if group.responses[winner].strip() == group.responses[loser].strip():
            raise DataError(f"{source}: chosen and rejected are identical")
    return group


def _parse(row: Any, source: str) -> PreferenceGroup:
    if not isinstance(row, dict):
        raise ValueError("a row must be a JSON object")
    margin = float(row.get("margin", 0.0) or 0.0)
    if "responses" in row:
        return _parse_ranking(row, source)
    missing = [k for k in ("chosen", "rejected") if k not in row]
    if missing:
        raise ValueError(f"missing field(s): {', '.join(missing)}")
    chosen, rejected = row["chosen"], row["rejected"]
    if "prompt" not in row and isinstance(chosen, str) and isinstance(rejected, str):
        prompt_text, chosen_text, rejected_text = split_transcript(chosen, rejected)
        prompt = transcript_messages(prompt_text)
    else:
        chosen_context, chosen_text = _response(chosen, "chosen")
        rejected_context, rejected_text = _response(rejected, "rejected")
        if "prompt" in row:
            prompt = _as_messages(row["prompt"], "prompt") + chosen_context
            if chosen_context != rejected_context:
                raise ValueError("chosen and rejected continue the prompt differently")
        else:
            if chosen_context != rejected_context or not chosen_context:
                raise ValueError("chosen and rejected conversations must share the same earlier messages")
            prompt = chosen_context
    return PreferenceGroup(prompt, (chosen_text, rejected_text), ((0, 1, margin),), source)


def _parse_ranking(row: dict[str, Any], source: str) -> PreferenceGroup:
    if "prompt" not in row:
        raise ValueError("missing field(s): prompt")
    responses = row["responses"]
    if (
        not isinstance(responses, list)
        or len(responses) < 2
        or not all(isinstance(r, str) for r in responses)
    ):
        raise ValueError("responses must be a list of at least two strings")
    if "ranking" in row:
        ranking = [int(i) for i in row["ranking"]]
        if sorted(ranking) != list(range(len(responses))):
            raise ValueError("ranking must be a permutation of the response indices, best first")
        pairs = tuple((w, lo, 0.0) for w, lo in itertools.combinations(ranking, 2))
    elif "scores" in row:
        scores = [float(s) for s in row["scores"]]
        if len(scores) != len(responses):
            raise ValueError("scores must have one value per response")
        pairs = tuple(
            (i, j, 0.0) if scores[i] > scores[j] else (j, i, 0.0)
            for i, j in itertools.combinations(range(len(responses)), 2)
            if scores[i] != scores[j]
        )
        if not pairs:
            raise ValueError("all scores are equal: no preference to learn")
    else:
        raise ValueError("a ranking row needs 'ranking' or 'scores'")
    return PreferenceGroup(_as_messages(row["prompt"], "prompt"), tuple(responses), pairs, source)


def load_preferences(
    paths: Sequence[str | Path], *, skip_invalid: bool = False
) -> tuple[list[PreferenceGroup], LoadStats]:
    """Read every file; a bad row raises DataError unless `skip_invalid`, which counts it instead."""
    stats = LoadStats()
    groups: list[PreferenceGroup] = []
    for raw_path in paths:
        path = Path(raw_path)
        if not path.exists():
            raise DataError(f"{path}: no such file")
        kept = 0
        for number, row in read_rows(path):
            stats.rows += 1
            try:
                group = parse_row(row, f"{path}:{number}")
            except DataError as exc:
                if not skip_invalid:
                    raise
                stats.skipped[str(exc).split(": ", 1)[1]] += 1
                continue
            groups.append(group)
            kept += 1
        stats.files[str(path)] = {"sha256": file_sha256(path), "groups": kept}
    stats.groups = len(groups)
    stats.pairs = sum(len(g.pairs) for g in groups)
    return groups, stats


@dataclass(frozen=True)
class EncodedGroup:
    """A group's responses as input ids (through the shared formatter) and its pairs."""

    input_ids: list[list[int]]
    pairs: tuple[tuple[int, int, float], ...]
    source: str
    response_tokens: tuple[int, ...] = ()
    """Tokens of each response as the model reads it (for the reward's length trend)."""


def encode_groups(
    groups: Sequence[PreferenceGroup], formatter: InputFormatter, stats: LoadStats, *, skip_invalid: bool
) -> list[EncodedGroup]:
    """Tokenize with the serving formatter; a pair that truncation made identical is a bad row."""
    encoded: list[EncodedGroup] = []
    for group in groups:
        encoded_inputs = formatter.encode(group.inputs())
        ids = [e.input_ids for e in encoded_inputs]
        pairs = tuple(p for p in group.pairs if ids[p[0]] != ids[p[1]])
        if len(pairs) < len(group.pairs):
            limit = formatter.max_length
            message = f"{group.source}: chosen and rejected are identical after truncation to {limit} tokens"
            if not skip_invalid:
                raise DataError(message)
            stats.skipped["chosen and rejected are identical after truncation"] += len(group.pairs) - len(
                pairs
            )
            if not pairs:
                continue
        tokens = tuple(e.response_tokens for e in encoded_inputs)
        encoded.append(EncodedGroup(ids, pairs, group.source, tokens))
    return encoded
