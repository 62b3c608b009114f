"""RewardService: score, compare and best-of-n as plain Python over one or more ensemble members.

A single model is an ensemble of one. Each member owns its runner and batcher (see `assembly`); an
item is answered when every member has scored it, and `reward_model`'s combiner turns the member
rewards into the reported one. Tokenization runs in worker threads, never on the event loop, and
members that tokenize identically share one tokenization.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app.assembly import Member, assemble_members
from app.batcher import ItemResult
from app.errors import Overloaded
from app.metrics import Metrics
from app.runner import RewardModelRunner
from app.settings import Settings
from reward_model.checkpoint import read_layout, require_length_fit
from reward_model.ensemble import NO_LENGTH_FIT, Combiner, LengthControl, preference_probability
from reward_model.errors import InferenceFailed, InvalidInput, RewardError
from reward_model.formatting import EncodedInput, RewardInput

log = logging.getLogger(__name__)

INLINE_TOKENIZE_CHARS = 4096
"""A request with at most this many characters is tokenized on the event loop (~0.25 ms for a
500-character item here); larger ones in a worker thread, whose two wake-ups cost a single small
request more than its tokenizing (one client's p50 18.7 -> 18.3 ms on a 2-core Zen 4, README)."""


@dataclass(frozen=True)
class ScoredItem:
    """One item's reported reward, the member rewards behind it, and its token accounting."""

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

    runner_type: type[RewardModelRunner] = RewardModelRunner
    """What runs each member's batches; tests put a gated subclass here."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self.members: list[Member] = []
        self.combiner: Combiner | None = None
        self.model_id = ""
        self.ready = False
        self.draining = False
        """Set on SIGTERM: new requests get 503 while those already accepted finish."""
        self.load_error: str | None = None

    # -- lifecycle ------------------------------------------------------------------------------------

    def load(self, model_dir: Path) -> None:
        """Open every member (blocking; call in a thread). Raises CheckpointError on a broken contract."""
        self.model_id = self.settings.model_name or model_dir.resolve().name
        layout = read_layout(model_dir, name=self.model_id, allow_pickle=self.settings.allow_pickle)
        s = self.settings
        self.combiner = Combiner.for_layout(
            layout, aggregation=s.aggregation, uncertainty_coef=s.uncertainty_coef
        )
        if s.length_residual:
            require_length_fit(layout)
        self.members = assemble_members(layout, s, self.metrics, self.runner_type)

    def warmup(self) -> None:
        """Run each member on one short input and on a full token budget, so /ready means fast."""
        for member in self.members:
            member.warm_up()

    def start(self) -> None:
        """Start every member's batcher (inside the event loop) and mark the service ready."""
        for member in self.members:
            member.batcher.start()
        self.ready = True
        self.metrics.ready.set(1)

    def start_draining(self) -> None:
        """Take no new work (readiness and new requests get 503); what was accepted still finishes."""
        self.draining = True
        self.ready = False
        self.metrics.ready.set(0)

    async def stop(self) -> None:
        """Stop every batcher; waiting items get a not-ready error."""
        self.ready = False
        self.metrics.ready.set(0)
        await asyncio.gather(*(m.batcher.stop() for m in self.members))
        for member in self.members:
            member.close()

    # -- scoring ---------------------------------------------------------------------------------------

    @property
    def scoring(self) -> Combiner:
        """The combiner of the loaded model; using it before `load` is a bug."""
        if self.combiner is None:
            raise RuntimeError("the service has no model loaded")
        return self.combiner

    @property
    def default_aggregation(self) -> str:
        """The request default: the setting, else the manifest, else mean."""
        return self.scoring.aggregation

    @property
    def uncertainty_coef(self) -> float:
        """λ in `mean_minus_std`: the setting, else the manifest's."""
        return self.scoring.uncertainty_coef

    def check_count(self, count: int) -> None:
        """Refuse empty or oversized requests before any work is done."""
        if count == 0:
            raise InvalidInput("at least one item is required")
        if count > self.settings.max_items_per_request:
            raise InvalidInput(
                f"{count} items in one request, over the limit of {self.settings.max_items_per_request}"
            )

    def length_control(self, penalty: float | None = None, residual: bool | None = None) -> LengthControl:
        """A request's length control: what it asks for, else the server's settings."""
        s = self.settings
        control = LengthControl(
            s.length_penalty if penalty is None else penalty,
            s.length_residual if residual is None else residual,
        )
        if control.residual and not self.scoring.length_fits():
            raise InvalidInput(NO_LENGTH_FIT)
        return control

    async def score(
        self,
        items: Sequence[RewardInput],
        *,
        normalize: bool | None = None,
        aggregation: str | None = None,
        length_penalty: float | None = None,
        length_residual: bool | None = None,
    ) -> ScoreOutcome:
        """Score items with every member and combine; rewards come back in input order."""
        self.check_count(len(items))
        combiner = self.scoring
        method = aggregation or combiner.aggregation
        normalized = combiner.normalizes(self.settings.normalize if normalize is None else normalize)
        length = self.length_control(length_penalty, length_residual)
        encodings, splits = await self._encode(items)
        member_futures: list[list[asyncio.Future[ItemResult]]] = []
        try:
            for member in self.members:
                ids = [e.input_ids for e in encodings[member.model.encoding_key]]
                member_futures.append(member.batcher.submit(ids, splits[member.name]))
        except Overloaded:
            for futures in member_futures:  # members that accepted must not compute for nothing
                for future in futures:
                    future.cancel()
            raise
        results = await asyncio.gather(
            *(asyncio.gather(*fs, return_exceptions=True) for fs in member_futures)
        )
        scored, queue_s, infer_s = [], 0.0, 0.0
        for index in range(len(items)):
            raw = []
            for member, member_results in zip(self.members, results, strict=True):
                result = member_results[index]
                if isinstance(result, BaseException):
                    raise _item_error(index, member, result)
                queue_s, infer_s = max(queue_s, result.queue_seconds), max(infer_s, result.inference_seconds)
                raw.append(result.reward)
            encoded = [encodings[m.model.encoding_key][index] for m in self.members]
            combined = combiner.combine(
                raw,
                normalized=normalized,
                method=method,
                length=length,
                response_tokens=[e.response_tokens for e in encoded],
            )
            scored.append(
                ScoredItem(
                    reward=combined.reward,
                    std=combined.std,
                    member_rewards=combined.member_rewards,
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
        **options: Any,
    ) -> Comparison:
        """P(a better than b) = sigmoid((r_a - r_b) / T), with T from calibration; symmetric in a and b."""
        items = [RewardInput.from_prompt_response(prompt, r) for r in (response_a, response_b)]
        outcome = await self.score(items, **options)
        a, b = outcome.items
        temperature = self.scoring.temperature(outcome.normalized)
        prob = preference_probability(a.reward - b.reward, temperature)
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
        **options: Any,
    ) -> Ranking:
        """Rank candidates best first; ties keep input order."""
        items = [RewardInput.from_prompt_response(prompt, r) for r in responses]
        outcome = await self.score(items, **options)
        order = sorted(range(len(responses)), key=lambda i: (-outcome.items[i].reward, i))
        return Ranking(order, outcome)

    async def _encode(
        self, items: Sequence[RewardInput]
    ) -> tuple[dict[str, list[EncodedInput]], dict[str, list[int]]]:
        """Token ids per encoding key, and each member's prefix split points: in worker threads, or on
        the event loop for a request small enough (`INLINE_TOKENIZE_CHARS`)."""
        groups: dict[str, list[Member]] = {}
        for member in self.members:
            groups.setdefault(member.model.encoding_key, []).append(member)

        def encode(members: list[Member]) -> tuple[list[EncodedInput], dict[str, list[int]]]:
            encoded = members[0].model.encode(items)
            return encoded, {m.name: m.model.prefix_lengths(encoded) for m in members}

        if sum(item.chars for item in items) <= INLINE_TOKENIZE_CHARS:
            results = [encode(members) for members in groups.values()]
        else:
            results = await asyncio.gather(*(asyncio.to_thread(encode, ms) for ms in groups.values()))
        encodings = {key: encoded for key, (encoded, _) in zip(groups, results, strict=True)}
        splits = {name: points for _, member_splits in results for name, points in member_splits.items()}
        return encodings, splits

    def _observe(self, scored: list[ScoredItem]) -> None:
        m = self.metrics
        m.items_scored.inc(len(scored))
        m.items_truncated.inc(sum(1 for s in scored if s.truncated))
        for item in scored:
            m.reward_value.observe(item.reward)
            if len(self.members) > 1:
                m.disagreement.observe(item.std)


def _item_error(index: int, member: Member, error: BaseException) -> RewardError:
    if isinstance(error, RewardError):
        return type(error)(f"item {index}: {error.message}")
    return InferenceFailed(f"item {index}: model {member.name!r} failed: {error!r}")


__all__ = ["Comparison", "Ranking", "RewardService", "ScoreOutcome", "ScoredItem"]
