"""RewardService: score, compare and best-of-n as plain Python over one or more ensemble members.

A single model is an ensemble of one. Each member owns its runner, formatter and batcher; an item is
answered when every member has scored it. Tokenization runs in worker threads, never on the loop,
and members that tokenize identically share one tokenization.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from app.batcher import DynamicBatcher, ItemResult
from app.checkpoint import (
    EnsembleManifest,
    EnsembleMember,
    RewardMetadata,
    is_ensemble,
    load_manifest,
    validate_checkpoint,
)
from app.ensemble import aggregate, spread
from app.errors import InferenceFailed, InvalidInput, Overloaded, RewardError
from app.formatting import EncodedInput, InputFormatter, RewardInput
from app.metrics import Metrics
from app.runner import RewardModelRunner
from app.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class Member:
    """One model copy with everything it needs to score items on its own."""

    name: str
    runner: RewardModelRunner
    formatter: InputFormatter
    batcher: DynamicBatcher
    metadata: RewardMetadata
    weight: float
    encoding_key: str
    thread: ThreadPoolExecutor
    """The one thread that loads, warms up and runs this model."""

    def normalize(self, reward: float) -> float:
        """Standardize with this member's own training statistics."""
        stats = self.metadata.normalization
        return (reward - stats.mean) / stats.std


@dataclass(frozen=True)
class ScoredItem:
    """One item's aggregated reward, the members' rewards behind it, and its token accounting."""

    reward: float
    std: float
    member_rewards: tuple[float, ...]
    num_tokens: int
    truncated: bool


@dataclass(frozen=True)
class ScoreOutcome:
    """The result of scoring a list of items, in input order, with timing for response headers."""

    items: list[ScoredItem]
    normalized: bool
    aggregation: str
    queue_seconds: float
    inference_seconds: float

    @property
    def rewards(self) -> list[float]:
        """The aggregated rewards in input order."""
        return [item.reward for item in self.items]


@dataclass(frozen=True)
class Comparison:
    """Which of two responses the model prefers, and how confidently."""

    a: ScoredItem
    b: ScoredItem
    prob_a_better: float
    preferred: str
    members_agreeing: int
    temperature: float
    outcome: ScoreOutcome


@dataclass(frozen=True)
class Ranking:
    """Candidates ranked best first."""

    ranking: list[int]
    outcome: ScoreOutcome


class RewardService:
    """Loads the members named by the settings and answers scoring calls; no HTTP in here."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.members: list[Member] = []
        self.manifest: EnsembleManifest | None = None
        self.model_id = ""
        self.ready = False
        self.untrained_head = False
        self.load_error: str | None = None
        self._device_locks: dict[str, threading.Lock] = {}

    # -- lifecycle ------------------------------------------------------------------------------------

    def load(self, model_dir: Path) -> None:
        """Load every member (blocking; call in a thread). Raises CheckpointError on a broken contract."""
        self.model_id = self.settings.model_name or model_dir.resolve().name
        if is_ensemble(model_dir):
            self.manifest = load_manifest(model_dir)
            entries = self.manifest.members
        else:
            entries = [EnsembleMember(path=".", name=self.model_id)]
        devices = self._member_devices(len(entries))
        seen: dict[str, int] = {}
        for entry, device in zip(entries, devices, strict=True):
            path = (model_dir / entry.path).resolve()
            name = entry.name or Path(entry.path).name
            seen[name] = seen.get(name, 0) + 1
            if seen[name] > 1:
                name = f"{name}-{seen[name]}"
            self.members.append(self._load_member(name, path, device, entry.weight))
        self.untrained_head = any(m.metadata.provenance.get("untrained_head") for m in self.members)

    def _member_devices(self, count: int) -> list[str]:
        """Spread members round-robin across GPUs when `--device auto` and there are several."""
        import torch

        if self.settings.device == "auto" and torch.cuda.is_available() and torch.cuda.device_count() > 1:
            return [f"cuda:{i % torch.cuda.device_count()}" for i in range(count)]
        return [self.settings.device] * count

    def _load_member(self, name: str, path: Path, device: str, weight: float) -> Member:
        s = self.settings
        metadata = validate_checkpoint(path)
        # The thread that loads the model runs its warm-up and every forward pass (see DynamicBatcher).
        thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{name}")
        try:
            runner = thread.submit(
                RewardModelRunner,
                path,
                device=device,
                dtype=s.dtype,
                trust_remote_code=s.trust_remote_code,
                metadata=metadata,
                device_lock=self._device_locks.setdefault(device, threading.Lock()),
            ).result()
        except BaseException:
            thread.shutdown(wait=False)
            raise
        limits = [metadata.max_length, s.max_input_tokens, runner.max_positions]
        max_length = min(x for x in limits if x)
        formatter = InputFormatter(
            runner.tokenizer,
            input_format=metadata.input_format.type,
            max_length=max_length,
            truncate=s.truncate,
        )
        batcher = DynamicBatcher(
            runner,
            name=name,
            max_batch_size=s.max_batch_size,
            max_batch_tokens=max(s.max_batch_tokens, max_length),
            max_wait_s=s.max_wait_ms / 1000.0,
            max_queue_items=s.max_queue_items,
            max_padding_ratio=_padding_ratio(s.max_padding_ratio, runner.device.type),
            metrics=self.metrics,
            executor=thread,
        )
        key = _encoding_key(runner.tokenizer, formatter)
        return Member(name, runner, formatter, batcher, metadata, weight, key, thread)

    def warmup(self) -> None:
        """Run each member on one short input and on a full token budget, so /ready means fast."""
        for member in self.members:
            fmt = member.formatter
            filler = fmt.tokenizer("hello", add_special_tokens=False)["input_ids"][:1] or [
                member.runner.pad_id
            ]
            content = fmt.max_length - len(fmt.prefix) - len(fmt.suffix)
            rows = max(
                1, min(self.settings.max_batch_size, member.batcher.max_batch_tokens // fmt.max_length)
            )
            short = [fmt.prefix + filler + fmt.suffix]
            full = [fmt.prefix + filler * content + fmt.suffix] * rows
            for batch in (short, full):
                member.thread.submit(member.runner.forward, batch).result()

    def start(self) -> None:
        """Start every member's batcher (inside the event loop) and mark the service ready."""
        for member in self.members:
            member.batcher.start()
        self.ready = True
        self.metrics.ready.set(1)

    async def stop(self) -> None:
        """Stop every batcher; waiting items get a not-ready error."""
        self.ready = False
        self.metrics.ready.set(0)
        await asyncio.gather(*(m.batcher.stop() for m in self.members))

    # -- scoring ---------------------------------------------------------------------------------------

    @property
    def default_aggregation(self) -> str:
        """The request default: the setting, else the manifest, else mean."""
        if self.settings.aggregation:
            return self.settings.aggregation
        return self.manifest.aggregation if self.manifest else "mean"

    @property
    def uncertainty_coef(self) -> float:
        """λ in `mean_minus_std`: the setting, else the manifest's."""
        if self.settings.uncertainty_coef is not None:
            return self.settings.uncertainty_coef
        return self.manifest.uncertainty_coef if self.manifest else 1.0

    def check_count(self, count: int) -> None:
        """Refuse empty or oversized requests before any work is done."""
        if count == 0:
            raise InvalidInput("at least one item is required")
        if count > self.settings.max_items_per_request:
            raise InvalidInput(
                f"{count} items in one request, over the limit of {self.settings.max_items_per_request}"
            )

    async def score(
        self, items: Sequence[RewardInput], *, normalize: bool | None = None, aggregation: str | None = None
    ) -> ScoreOutcome:
        """Score items with every member and aggregate; rewards come back in input order."""
        self.check_count(len(items))
        method = aggregation or self.default_aggregation
        # Raw scales differ between members, so an ensemble always aggregates standardized rewards.
        normalized = len(self.members) > 1 or (self.settings.normalize if normalize is None else normalize)
        encodings = await self._encode(items)
        member_futures: list[list[asyncio.Future[ItemResult]]] = []
        try:
            for member in self.members:
                member_futures.append(
                    member.batcher.submit([e.input_ids for e in encodings[member.encoding_key]])
                )
        except Overloaded:
            for futures in member_futures:  # members that accepted must not compute for nothing
                for future in futures:
                    future.cancel()
            raise
        results = await asyncio.gather(
            *(asyncio.gather(*fs, return_exceptions=True) for fs in member_futures)
        )
        scored, queue_s, infer_s = [], 0.0, 0.0
        weights = [m.weight for m in self.members]
        for index in range(len(items)):
            values = []
            for member, member_results in zip(self.members, results, strict=True):
                result = member_results[index]
                if isinstance(result, BaseException):
                    raise _item_error(index, member, result)
                assert isinstance(result, ItemResult)
                queue_s, infer_s = max(queue_s, result.queue_seconds), max(infer_s, result.inference_seconds)
                values.append(member.normalize(result.reward) if normalized else result.reward)
            encoded = [encodings[m.encoding_key][index] for m in self.members]
            reward = aggregate(values, method, weights=weights, coef=self.uncertainty_coef)
            scored.append(
                ScoredItem(
                    reward=reward,
                    std=spread(values),
                    member_rewards=tuple(values),
                    num_tokens=max(e.num_tokens for e in encoded),
                    truncated=any(e.truncated for e in encoded),
                )
            )
        self._observe(scored)
        return ScoreOutcome(scored, normalized, method, queue_s, infer_s)

    async def compare(
        self,
        prompt: str | Sequence[dict[str, str]],
        response_a: str,
        response_b: str,
        *,
        normalize: bool | None = None,
        aggregation: str | None = None,
    ) -> Comparison:
        """P(a better than b) = sigmoid((r_a - r_b) / T), with T from calibration; symmetric in a and b."""
        items = [RewardInput.from_prompt_response(prompt, r) for r in (response_a, response_b)]
        outcome = await self.score(items, normalize=normalize, aggregation=aggregation)
        a, b = outcome.items
        temperature = self.temperature(outcome.normalized)
        prob = _sigmoid((a.reward - b.reward) / temperature)
        preferred = "a" if a.reward > b.reward else "b" if b.reward > a.reward else "tie"
        sign = (a.reward > b.reward) - (a.reward < b.reward)
        agreeing = sum(
            1
            for ra, rb in zip(a.member_rewards, b.member_rewards, strict=True)
            if (ra > rb) - (ra < rb) == sign
        )
        return Comparison(a, b, prob, preferred, agreeing, temperature, outcome)

    async def best_of_n(
        self,
        prompt: str | Sequence[dict[str, str]],
        responses: Sequence[str],
        *,
        normalize: bool | None = None,
        aggregation: str | None = None,
    ) -> Ranking:
        """Rank candidates best first; ties keep input order."""
        items = [RewardInput.from_prompt_response(prompt, r) for r in responses]
        outcome = await self.score(items, normalize=normalize, aggregation=aggregation)
        order = sorted(range(len(responses)), key=lambda i: (-outcome.items[i].reward, i))
        return Ranking(order, outcome)

    def temperature(self, normalized: bool) -> float:
        """Calibration temperature on the scale the rewards are reported in.

        One model: its own T (divided by its std when normalized). An ensemble: the temperature fitted
        on its aggregated rewards when the manifest has one, else the members' mean T / std.
        """
        if not normalized:
            return self.members[0].metadata.calibration.temperature
        if len(self.members) > 1 and self.manifest is not None and self.manifest.calibration is not None:
            return self.manifest.calibration.temperature
        scaled = [m.metadata.calibration.temperature / m.metadata.normalization.std for m in self.members]
        return math.fsum(scaled) / len(scaled)

    async def _encode(self, items: Sequence[RewardInput]) -> dict[str, list[EncodedInput]]:
        groups: dict[str, Member] = {}
        for member in self.members:
            groups.setdefault(member.encoding_key, member)
        encoded = await asyncio.gather(
            *(asyncio.to_thread(m.formatter.encode, items) for m in groups.values())
        )
        return dict(zip(groups, encoded, strict=True))

    def _observe(self, scored: list[ScoredItem]) -> None:
        m = self.metrics
        m.items_scored.inc(len(scored))
        m.items_truncated.inc(sum(1 for s in scored if s.truncated))
        for item in scored:
            m.reward_value.observe(item.reward)
            if len(self.members) > 1:
                m.disagreement.observe(item.std)


def _padding_ratio(setting: float | None, device_type: str) -> float:
    """The padding bound for a device: on a CPU every padded token costs as much as a real one."""
    if setting is not None:
        return setting
    return 0.5 if device_type == "cuda" else 0.1


def _item_error(index: int, member: Member, error: BaseException) -> RewardError:
    if isinstance(error, RewardError):
        return type(error)(f"item {index}: {error.message}")
    return InferenceFailed(f"item {index}: model {member.name!r} failed: {error!r}")


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _encoding_key(tokenizer: object, formatter: InputFormatter) -> str:
    """Members whose tokenizer, format and limits agree produce identical input ids."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    vocab = backend.to_str() if backend is not None else repr(tokenizer)
    template = getattr(tokenizer, "chat_template", None) or ""
    digest = hashlib.sha256(f"{vocab}|{template}|{formatter.format_name}".encode()).hexdigest()[:16]
    return f"{digest}:{formatter.max_length}:{formatter.truncate}"


__all__ = ["Comparison", "Member", "Ranking", "RewardService", "ScoreOutcome", "ScoredItem"]
