"""RewardTrainer: transformers' Trainer with the Bradley-Terry loss, and `fit_member`, which runs it.

Distribution, mixed precision and checkpointing are the Trainer's and accelerate's: launch with
`torchrun --nproc_per_node=N -m training ...` or `accelerate launch --multi_gpu --num_processes N
-m training ...` for multi-GPU (or, without GPUs, multi-process CPU) and multi-node training; see
docs/distributed-training.md. Every process trains; only the main one saves. The pipeline around
it (data, ensembles, reward.json) is `pipeline.py`.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EarlyStoppingCallback,
    EvalPrediction,
    PrinterCallback,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from reward_model.checkpoint import RewardMetadata
from reward_model.devices import cpu_has_native_bf16
from reward_model.formatting import FormatType, InputFormatter
from reward_model.loading import effective_max_length
from reward_model.tensors import max_positions, reward_logits
from training.config import RewardTrainingConfig
from training.data import EncodedGroup, LoadStats, PreferenceGroup, encode_groups
from training.loss import PreferenceCollator, group_rows, preference_loss

log = logging.getLogger(__name__)


class RewardModelForTraining(torch.nn.Module):
    """Wraps a sequence classifier so that forward returns one reward per row, pooled as in serving.

    The Trainer wraps this module (DDP, FSDP, mixed precision), so gradients flow through the same
    `reward_logits` that `reward-serve` reads rewards with.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Rewards, shape [batch]."""
        get_base_model = getattr(self.model, "get_base_model", None)  # a peft (LoRA) wrapper
        inner = get_base_model() if callable(get_base_model) else self.model
        return reward_logits(inner, input_ids, attention_mask)


class RewardTrainer(Trainer):
    """Trainer whose loss is the Bradley-Terry preference loss over comparison groups."""

    def __init__(self, *args: Any, center_rewards_coef: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.center_rewards_coef = center_rewards_coef
        self._train_stats: dict[str, list[float]] = defaultdict(list)

    def _get_train_sampler(self, train_dataset: Any = None) -> torch.utils.data.Sampler[int] | None:
        """Batches of similar length (shuffled in megabatches), so little compute goes to padding."""
        from transformers.trainer_pt_utils import LengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        if dataset is None:
            return None
        groups: list[EncodedGroup] = list(dataset)  # type: ignore[arg-type]
        lengths = [max(len(ids) for ids in group.input_ids) * len(group.input_ids) for group in groups]
        generator = torch.Generator().manual_seed(self.args.seed)
        batch = self.args.train_batch_size * self.args.gradient_accumulation_steps
        return LengthGroupedSampler(batch, lengths=lengths, generator=generator)

    def compute_loss(
        self,
        model: torch.nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        """One concatenated forward pass over every response in the batch, then the pairwise loss."""
        rewards = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).float()
        out = preference_loss(
            rewards,
            inputs["winners"],
            inputs["losers"],
            inputs["margins"],
            inputs["pair_weights"],
            self.center_rewards_coef,
        )
        if model.training:
            with torch.no_grad():
                stats = self._train_stats
                stats["accuracy"].append(float((out.margins > 0).float().mean()))
                stats["margin"].append(float(out.margins.mean()))
                stats["reward_mean"].append(float(rewards.mean()))
                stats["reward_std"].append(float(rewards.std()) if rewards.numel() > 1 else 0.0)
        return (out.loss, {"margins": out.margins}) if return_outputs else out.loss

    def prediction_step(
        self,
        model: torch.nn.Module,
        inputs: dict[str, Any],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Evaluation returns each pair's margin r_w - r_l, one row per group; labels mark the real pairs.

        One row per group, not one per pair, because distributed evaluation gathers batches row-wise
        and takes rows for samples (groups): a ranking's K-choose-2 pairs would unbalance the gather.
        """
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, out = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        margins, real = group_rows(out["margins"].detach(), inputs["pair_groups"])
        return loss.detach(), margins, real

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add training accuracy, margin and reward statistics averaged since the last log."""
        if "loss" in logs and self._train_stats:
            for key, values in self._train_stats.items():
                logs[key] = round(float(np.mean(values)), 4)
            self._train_stats.clear()
        super().log(logs, start_time)


def pair_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and mean margin over evaluation pairs (the entries the labels mark as real)."""
    real = np.asarray(prediction.label_ids).reshape(-1) == 1.0  # the Trainer pads with -100
    margins = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)[real]
    return {"accuracy": float((margins > 0).mean()), "margin": float(margins.mean())}


def format_type(config: RewardTrainingConfig) -> FormatType:
    """The validated `--input_format`."""
    if config.input_format not in ("auto", "chat_template", "plain"):
        raise ValueError(f"--input_format must be auto, chat_template or plain, not {config.input_format!r}")
    return config.input_format  # type: ignore[return-value]


def _precision(choice: str) -> str:
    """The mixed precision to train in, bf16, fp16 or fp32: weights and optimizer stay float32.

    `auto` is bf16 where the hardware computes it: GPUs that support it, and CPUs with AVX512-BF16 or
    AMX (the demo trains 1.4x faster on a Xeon with AMX, held-out accuracy within its standard error,
    README). Elsewhere float32: a CPU without them emulates bf16, many times slower."""
    if choice != "auto":
        return choice if choice in ("bf16", "fp16") else "fp32"
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if not _has_accelerator() and cpu_has_native_bf16() else "fp32"


def _has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator) to train on."""
    accelerator = getattr(torch, "accelerator", None)  # torch >= 2.6
    if accelerator is not None:
        return bool(accelerator.is_available())
    return torch.cuda.is_available() or torch.backends.mps.is_available()


def _check_world_size(args: TrainingArguments) -> None:
    """Fail when the launcher started several processes but the Trainer joined none of them together.

    Each process would then train its own model on all the data and rank 0's would be saved: a silent
    waste at best, and the failure mode of a CPU run without `use_cpu`.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))  # set by torchrun and accelerate launch
    if launched > 1 and args.world_size == 1:
        raise RuntimeError(
            f"launched as {launched} processes, but the Trainer formed no process group of them"
        )


def _head_name(model: torch.nn.Module) -> str:
    return "score" if hasattr(model, "score") else "classifier"


@dataclass
class FitResult:
    """What training one member leaves behind for the pipeline to finish its checkpoint with."""

    train_set: list[EncodedGroup]
    max_length: int
    training_loss: float
    world_size: int
    """Processes that trained it together (the effective batch is batch size x accumulation x this)."""
    steps: int
    """Optimizer steps; every process takes each one, on its own share of the batch."""
    precision: str
    """What the matmuls ran in: bf16, fp16 or fp32 (`--precision auto` resolved on this machine)."""


class TrainingProgress(TrainerCallback):  # type: ignore[misc]
    """One progress bar per training run, labelled; the Trainer's log dicts go to the debug log."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.bar: Any = None

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, desc=self.label, unit="step", dynamic_ncols=True)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
        log.debug("step %d: %s", state.global_step, logs)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass(frozen=True)
class MemberRun:
    """One model to train: the options, its data, where it goes, its seed and its progress label."""

    config: RewardTrainingConfig
    train_groups: list[PreferenceGroup]
    eval_groups: list[PreferenceGroup]
    stats: LoadStats
    output: Path
    seed: int
    label: str = "training"


def fit_member(run: MemberRun) -> FitResult | None:
    """Train one reward model and save its weights and tokenizer into `run.output` (None off rank 0)."""
    config, output, seed, stats = run.config, run.output, run.seed, run.stats
    train_groups, eval_groups = run.train_groups, run.eval_groups
    assert config.model is not None
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model = AutoModelForSequenceClassification.from_pretrained(
        config.model, num_labels=1, dtype=torch.float32
    )
    model.config.pad_token_id = tokenizer.pad_token_id
    if config.disable_dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    # The serving rule, so that training never sees inputs the served model would not.
    metadata = RewardMetadata(max_length=config.max_length)
    max_length = effective_max_length(metadata, None, max_positions(model.config))
    formatter = InputFormatter(tokenizer, input_format=format_type(config), max_length=max_length)
    train_set = encode_groups(train_groups, formatter, stats, skip_invalid=config.skip_invalid)
    eval_set = encode_groups(eval_groups, formatter, stats, skip_invalid=config.skip_invalid)
    head = _head_name(model)
    if config.freeze_backbone:
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.startswith(head)
    if config.lora_r > 0:
        from peft import LoraConfig, get_peft_model

        lora = LoraConfig(
            task_type="SEQ_CLS",
            r=config.lora_r,
            lora_alpha=config.lora_alpha,
            lora_dropout=config.lora_dropout,
            target_modules="all-linear",
            modules_to_save=[head],
        )
        model = get_peft_model(model, lora)
    if config.gradient_checkpointing:
        model.gradient_checkpointing_enable()
    precision = _precision(config.precision)
    eval_strategy = ("steps" if config.eval_steps else "epoch") if eval_set else "no"
    save_strategy = "no" if config.save_steps < 0 else "steps" if config.save_steps else "epoch"
    early_stopping = config.early_stopping_patience > 0 and bool(eval_set)
    args = TrainingArguments(
        output_dir=str(output / "trainer"),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.learning_rate,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_ratio,
        weight_decay=config.weight_decay,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.eval_batch_size,
        gradient_accumulation_steps=config.grad_accum,
        seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        eval_strategy=eval_strategy,
        eval_steps=config.eval_steps or None,
        # Early stopping restores the best evaluation, so it needs a save at every evaluation.
        save_strategy=eval_strategy if early_stopping else save_strategy,
        save_steps=(config.eval_steps or 1) if early_stopping else max(config.save_steps, 1),
        save_total_limit=2,
        logging_steps=config.logging_steps,
        report_to=[] if config.report_to == "none" else [config.report_to],
        remove_unused_columns=False,
        load_best_model_at_end=early_stopping,
        metric_for_best_model="accuracy" if early_stopping else None,
        greater_is_better=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        disable_tqdm=True,  # TrainingProgress draws the one bar
        # Without it, accelerate forms no CPU process group: under torchrun each process trains alone.
        use_cpu=not _has_accelerator(),
    )
    _check_world_size(args)
    callbacks: list[TrainerCallback] = [TrainingProgress(run.label)]
    if config.early_stopping_patience:
        callbacks.append(EarlyStoppingCallback(config.early_stopping_patience))
    trainer = RewardTrainer(
        model=RewardModelForTraining(model),
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set or None,
        data_collator=PreferenceCollator(int(tokenizer.pad_token_id)),
        compute_metrics=pair_metrics,
        callbacks=callbacks,
        center_rewards_coef=config.center_rewards_coef,
    )
    trainer.remove_callback(PrinterCallback)
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    if not trainer.is_world_process_zero():
        return None
    # Under DDP every process holds the same weights, so rank 0's copy is the model; no gather needed.
    export = model.merge_and_unload() if config.lora_r > 0 else model  # type: ignore[operator]
    export.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    loss = float(result.training_loss)
    return FitResult(train_set, max_length, loss, args.world_size, trainer.state.global_step, precision)
