"""Builds the service's members from settings: one opened model, thread, runner and batcher each.

Each member's model is opened on the one thread that will also warm it up and run every forward
pass: on a CPU every thread that runs torch keeps its own OpenMP team, and a second team made every
later forward pass 60% slower.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from app.batcher import DynamicBatcher
from app.metrics import Metrics
from app.runner import RewardModelRunner
from app.settings import Settings
from reward_model.checkpoint import MemberSpec, ModelLayout, RewardMetadata
from reward_model.devices import member_devices
from reward_model.formatting import InputFormatter
from reward_model.loading import LoadOptions, ScoringModel, open_member


@dataclass
class Member:
    """One model copy with everything it needs to score items on its own."""

    name: str
    runner: RewardModelRunner
    batcher: DynamicBatcher
    thread: ThreadPoolExecutor
    """The one thread that loads, warms up and runs this model."""

    @property
    def model(self) -> ScoringModel:
        """The opened checkpoint."""
        return self.runner.model

    @property
    def formatter(self) -> InputFormatter:
        """This member's formatter, with its effective max length."""
        return self.runner.model.formatter

    @property
    def metadata(self) -> RewardMetadata:
        """The member's reward.json."""
        return self.runner.model.metadata

    def warm_up(self) -> None:
        """Run the warm-up shapes on the member's own thread (blocking)."""
        b = self.batcher
        self.thread.submit(self.runner.warm_up, b.max_batch_size, b.max_batch_tokens).result()

    def close(self) -> None:
        """Free the member's engine and thread (the batcher must be stopped first)."""
        self.runner.model.engine.close()
        self.thread.shutdown(wait=False)


def load_options(settings: Settings) -> LoadOptions:
    """The loader's options from the service's settings."""
    return LoadOptions(
        engine=settings.engine,
        compile=settings.compile == "on",
        device=settings.device,
        dtype=settings.dtype,
        max_input_tokens=settings.max_input_tokens,
        truncate=settings.truncate,
        trust_remote_code=settings.trust_remote_code,
        prefix_sharing=settings.prefix_sharing,
        prefix_cache_mb=settings.prefix_cache_mb,
        allow_pickle=settings.allow_pickle,
    )


def padding_ratio(setting: float | None, device_type: str, engine: str = "transformers") -> float:
    """The padding bound: on a CPU every padded token costs as much as a real one; vLLM never pads."""
    if setting is not None:
        return setting
    if engine == "vllm":
        return 1.0
    return 0.5 if device_type == "cuda" else 0.1


def assemble_members(
    layout: ModelLayout,
    settings: Settings,
    metrics: Metrics,
    runner_type: type[RewardModelRunner] = RewardModelRunner,
) -> list[Member]:
    """Open every member of the layout on its device, each with its own thread and batcher."""
    options = load_options(settings)
    locks: dict[str, threading.Lock] = {}
    members: list[Member] = []
    try:
        for spec, device in zip(
            layout.members, member_devices(settings.device, len(layout.members)), strict=True
        ):
            lock = locks.setdefault(device, threading.Lock())
            members.append(_member(spec, options, device, lock, settings, metrics, runner_type))
    except BaseException:
        for member in members:
            member.close()
        raise
    return members


def _member(
    spec: MemberSpec,
    options: LoadOptions,
    device: str,
    lock: threading.Lock,
    settings: Settings,
    metrics: Metrics,
    runner_type: type[RewardModelRunner],
) -> Member:
    thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"model-{spec.name}")
    try:
        model = thread.submit(open_member, spec, options, device).result()
    except BaseException:
        thread.shutdown(wait=False)
        raise
    runner = runner_type(model, lock)
    s = settings
    batcher = DynamicBatcher(
        runner,
        name=spec.name,
        max_batch_size=s.max_batch_size,
        max_batch_tokens=max(s.max_batch_tokens, model.formatter.max_length),
        max_wait_s=s.max_wait_ms / 1000.0,
        max_queue_items=s.max_queue_items,
        max_padding_ratio=padding_ratio(s.max_padding_ratio, model.device.type, model.engine.name),
        metrics=metrics,
        executor=thread,
    )
    return Member(spec.name, runner, batcher, thread)
