"""The checkpoint contract shared by training and serving: `reward.json`, `ensemble.json`, validation.

A checkpoint is a HuggingFace `AutoModelForSequenceClassification` directory with `num_labels == 1`
and a tokenizer, plus an optional `reward.json`. An ensemble is a directory whose `ensemble.json`
lists member checkpoints by relative path. This module imports neither FastAPI nor the trainer.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from reward_model.errors import CheckpointError

REWARD_FILE = "reward.json"
ENSEMBLE_FILE = "ensemble.json"
FORMAT_VERSION = 1
DEFAULT_MAX_LENGTH = 512

Aggregation = Literal["mean", "median", "min", "mean_minus_std", "weighted"]


class Normalization(BaseModel):
    """Reward statistics over the training responses; served rewards can be standardized with them."""

    model_config = ConfigDict(extra="forbid")
    mean: float = 0.0
    std: float = Field(default=1.0, gt=0.0)


class Calibration(BaseModel):
    """Temperature T in `P(a better than b) = sigmoid((r_a - r_b) / T)`, fitted on validation pairs."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(default=1.0, gt=0.0)


class LengthFit(BaseModel):
    """The reward's linear trend in response length, fitted on the training responses: reward ≈
    intercept + slope × response tokens. Serving can subtract it (`length_residual`)."""

    model_config = ConfigDict(extra="forbid")
    slope: float
    mean_tokens: float = Field(ge=0.0)
    correlation: float = Field(ge=-1.0, le=1.0)


class InputFormat(BaseModel):
    """How (prompt, response) becomes text: the tokenizer's chat template, the plain format, or auto."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["auto", "chat_template", "plain"] = "auto"


class RewardMetadata(BaseModel):
    """The content of `reward.json`. Every field has a default so off-the-shelf models load too."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    max_length: int = Field(default=DEFAULT_MAX_LENGTH, ge=8)
    input_format: InputFormat = Field(default_factory=InputFormat)
    normalization: Normalization = Field(default_factory=Normalization)
    calibration: Calibration = Field(default_factory=Calibration)
    length: LengthFit | None = None
    provenance: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format_version")
    @classmethod
    def _known_version(cls, value: int) -> int:
        if value > FORMAT_VERSION:
            raise ValueError(
                f"format_version {value} is newer than this software understands ({FORMAT_VERSION})"
            )
        return value


class EnsembleMember(BaseModel):
    """One entry of `ensemble.json`."""

    model_config = ConfigDict(extra="forbid")
    path: str
    weight: float = Field(default=1.0, ge=0.0)
    name: str | None = None


class EnsembleManifest(BaseModel):
    """The content of `ensemble.json`: members by relative path and a default aggregation."""

    model_config = ConfigDict(extra="forbid")
    format_version: int = FORMAT_VERSION
    members: list[EnsembleMember] = Field(min_length=1)
    aggregation: Aggregation = "mean"
    uncertainty_coef: float = Field(default=1.0, ge=0.0)
    calibration: Calibration | None = Field(
        default=None, description="Temperature fitted on the aggregated, standardized rewards."
    )
    provenance: dict[str, Any] = Field(default_factory=dict)


def _one_line(error: ValidationError) -> str:
    parts = []
    for err in error.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        parts.append(f"{loc}: {err['msg']}")
    return "; ".join(parts)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: not readable JSON ({exc})") from exc


def load_metadata(checkpoint: str | Path) -> RewardMetadata:
    """Read `reward.json` from a checkpoint, or return the defaults when there is none."""
    path = Path(checkpoint) / REWARD_FILE
    if not path.exists():
        return RewardMetadata()
    try:
        return RewardMetadata.model_validate(_read_json(path))
    except ValidationError as exc:
        raise CheckpointError(f"{path}: {_one_line(exc)}") from exc


def save_metadata(checkpoint: str | Path, metadata: RewardMetadata) -> None:
    """Write `reward.json` into a checkpoint directory."""
    path = Path(checkpoint) / REWARD_FILE
    path.write_text(metadata.model_dump_json(indent=2) + "\n", encoding="utf-8")


def load_manifest(directory: str | Path) -> EnsembleManifest:
    """Read and validate `ensemble.json`, checking that every member path stays inside the directory."""
    root = Path(directory)
    path = root / ENSEMBLE_FILE
    try:
        manifest = EnsembleManifest.model_validate(_read_json(path))
    except ValidationError as exc:
        raise CheckpointError(f"{path}: {_one_line(exc)}") from exc
    for member in manifest.members:
        member_dir = (root / member.path).resolve()
        if not member_dir.is_dir():
            raise CheckpointError(f"{path}: member path {member.path!r} is not a directory")
    return manifest


def save_manifest(directory: str | Path, manifest: EnsembleManifest) -> None:
    """Write `ensemble.json` into an ensemble directory."""
    path = Path(directory) / ENSEMBLE_FILE
    path.write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n", encoding="utf-8")


def is_ensemble(directory: str | Path) -> bool:
    """True when the directory holds an `ensemble.json`."""
    return (Path(directory) / ENSEMBLE_FILE).exists()


def validate_checkpoint(checkpoint: str | Path, *, allow_pickle: bool = False) -> RewardMetadata:
    """Check the contract cheaply (no weights loaded) and return the metadata; raise CheckpointError.

    Weights must be safetensors: pickle files (`.bin`) can run code when loaded, so a checkpoint that
    has only those is refused unless `allow_pickle`."""
    root = Path(checkpoint)
    if not root.is_dir():
        raise CheckpointError(f"{root}: checkpoint directory does not exist")
    config_path = root / "config.json"
    if not config_path.exists():
        raise CheckpointError(f"{root}: no config.json, so this is not a HuggingFace model directory")
    config = _read_json(config_path)
    num_labels = config.get("num_labels", len(config.get("id2label", {})) or 2)
    if num_labels != 1:
        raise CheckpointError(f"{root}: num_labels is {num_labels}, a reward model must have num_labels == 1")
    tokenizer_files = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "spm.model", "tokenizer.model")
    if not any((root / name).exists() for name in tokenizer_files):
        raise CheckpointError(f"{root}: no tokenizer files (tokenizer.json or tokenizer_config.json)")
    weights = weight_files(root)
    if not weights:
        raise CheckpointError(f"{root}: no weights (*.safetensors or pytorch_model*.bin)")
    if weights[0].suffix != ".safetensors" and not allow_pickle:
        raise CheckpointError(
            f"{root}: only pickle weights ({weights[0].name}), which can run code when loaded; convert them "
            "to safetensors, or pass --allow-pickle if you trust this checkpoint"
        )
    return load_metadata(root)


def weight_files(checkpoint: str | Path) -> list[Path]:
    """The weight files of a checkpoint, safetensors preferred, in a stable order."""
    root = Path(checkpoint)
    safetensors = sorted(root.glob("*.safetensors"))
    return safetensors or sorted(root.glob("pytorch_model*.bin"))


def weights_sha256(checkpoint: str | Path) -> str:
    """SHA-256 over the weight files' bytes, so `/info` can prove which weights are served."""
    digest = hashlib.sha256()
    for path in weight_files(checkpoint):
        digest.update(path.name.encode())
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


@dataclass(frozen=True)
class MemberSpec:
    """One checkpoint to open: where it is, its validated metadata, its name and ensemble weight."""

    name: str
    path: Path
    metadata: RewardMetadata
    weight: float = 1.0


@dataclass(frozen=True)
class ModelLayout:
    """A checkpoint or an ensemble directory, validated without loading weights."""

    root: Path
    members: tuple[MemberSpec, ...]
    manifest: EnsembleManifest | None
    """`None` for a single checkpoint, which is served as an ensemble of one."""


def read_layout(directory: str | Path, *, name: str | None = None, allow_pickle: bool = False) -> ModelLayout:
    """Validate a checkpoint or ensemble directory and name its members (unique names, in order)."""
    root = Path(directory)
    manifest = load_manifest(root) if is_ensemble(root) else None
    single = EnsembleMember(path=".", name=name or root.resolve().name)
    entries = manifest.members if manifest is not None else [single]
    members: list[MemberSpec] = []
    seen: dict[str, int] = {}
    for entry in entries:
        path = (root / entry.path).resolve()
        member_name = entry.name or Path(entry.path).name
        seen[member_name] = seen.get(member_name, 0) + 1
        if seen[member_name] > 1:
            member_name = f"{member_name}-{seen[member_name]}"
        metadata = validate_checkpoint(path, allow_pickle=allow_pickle)
        members.append(MemberSpec(member_name, path, metadata, entry.weight))
    return ModelLayout(root, tuple(members), manifest)


def require_length_fit(layout: ModelLayout) -> None:
    """Refuse, in one line, to subtract a length trend that some member's reward.json lacks."""
    missing = [m.name for m in layout.members if m.metadata.length is None]
    if missing:
        raise CheckpointError(
            f"--length-residual: no length fit in the reward.json of {', '.join(missing)} (retrain it)"
        )
