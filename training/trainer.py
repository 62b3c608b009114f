"""RewardTrainer: transformers' Trainer with the Bradley-Terry loss, and the pipeline around it.

Distribution, mixed precision and checkpointing are the Trainer's and accelerate's: launch with
`torchrun --nproc_per_node=N -m training.cli ...` or `accelerate launch` for multi-GPU and multi-node.
"""

from __future__ import annotations

import logging
import platform
import random
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    EarlyStoppingCallback,
    EvalPrediction,
    Trainer,
    TrainingArguments,
)

from app.checkpoint import (
    Calibration,
    EnsembleManifest,
    EnsembleMember,
    InputFormat,
    Normalization,
    RewardMetadata,
    save_manifest,
    save_metadata,
)
from app.formatting import FormatType, InputFormatter
from app.runner import RewardModelRunner, reward_logits
from training.calibration import fit_temperature
from training.config import RewardTrainingConfig
from training.data import EncodedGroup, LoadStats, PreferenceGroup, encode_groups, load_preferences
from training.evaluate import (
    TRAIN_ROWS_FILE,
    score_checkpoint,
    score_pairs,
    score_sequences,
    write_evaluation,
)
from training.loss import PreferenceCollator, preference_loss

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
        groups: list[EncodedGroup] = list(dataset)
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
        """Evaluation returns each pair's margin r_w - r_l; the label is a placeholder the Trainer needs."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad():
            loss, out = self.compute_loss(model, inputs, return_outputs=True)
        if prediction_loss_only:
            return loss.detach(), None, None
        margins = out["margins"].detach()
        return loss.detach(), margins, torch.zeros_like(margins)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add training accuracy, margin and reward statistics averaged since the last log."""
        if "loss" in logs and self._train_stats:
            for key, values in self._train_stats.items():
                logs[key] = round(float(np.mean(values)), 4)
            self._train_stats.clear()
        super().log(logs, start_time)


def pair_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and mean margin over evaluation pairs."""
    margins = np.asarray(prediction.predictions, dtype=np.float64).reshape(-1)
    return {"accuracy": float((margins > 0).mean()), "margin": float(margins.mean())}


def split_holdout(
    groups: list[PreferenceGroup], fraction: float, seed: int
) -> tuple[list[PreferenceGroup], list[PreferenceGroup]]:
    """Deterministic train/validation split by group."""
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    held = max(1, round(len(groups) * fraction)) if fraction > 0 else 0
    holdout = set(order[:held])
    return [g for i, g in enumerate(groups) if i not in holdout], [
        g for i, g in enumerate(groups) if i in holdout
    ]


def _format(config: RewardTrainingConfig) -> FormatType:
    if config.input_format not in ("auto", "chat_template", "plain"):
        raise ValueError(f"--input_format must be auto, chat_template or plain, not {config.input_format!r}")
    return config.input_format  # type: ignore[return-value]


def _precision(choice: str) -> tuple[bool, bool]:
    if choice == "auto":
        cuda = torch.cuda.is_available()
        return cuda and torch.cuda.is_bf16_supported(), False
    return choice == "bf16", choice == "fp16"


def _head_name(model: torch.nn.Module) -> str:
    return "score" if hasattr(model, "score") else "classifier"


def train_member(
    config: RewardTrainingConfig,
    train_groups: list[PreferenceGroup],
    eval_groups: list[PreferenceGroup],
    stats: LoadStats,
    output: Path,
    seed: int,
) -> dict[str, Any]:
    """Train one reward model into `output` and write its reward.json and evaluation report."""
    assert config.model is not None
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(config.model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    model = AutoModelForSequenceClassification.from_pretrained(
        config.model, num_labels=1, dtype=torch.float32
    )
    if model.config.num_labels != 1:
        raise ValueError(f"num_labels must be 1 for a reward model, got {model.config.num_labels}")
    model.config.pad_token_id = tokenizer.pad_token_id
    if config.disable_dropout:
        for module in model.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    formatter = InputFormatter(tokenizer, input_format=_format(config), max_length=config.max_length)
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
    bf16, fp16 = _precision(config.precision)
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
        bf16=bf16,
        fp16=fp16,
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
    )
    callbacks = (
        [EarlyStoppingCallback(config.early_stopping_patience)] if config.early_stopping_patience else []
    )
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
    result = trainer.train(resume_from_checkpoint=config.resume_from_checkpoint)
    if not trainer.is_world_process_zero():
        return {}
    export = model.merge_and_unload() if config.lora_r > 0 else model  # type: ignore[operator]
    export.save_pretrained(output, safe_serialization=True)
    tokenizer.save_pretrained(output)
    return finalize_checkpoint(
        config, output, train_set, eval_groups, stats, seed, float(result.training_loss)
    )


def finalize_checkpoint(
    config: RewardTrainingConfig,
    output: Path,
    train_set: list[EncodedGroup],
    eval_groups: list[PreferenceGroup],
    stats: LoadStats,
    seed: int,
    training_loss: float,
) -> dict[str, Any]:
    """Score with the serving runner to fit normalization and temperature; write reward.json and report."""
    runner = RewardModelRunner(output, device=config.device, dtype="float32", metadata=RewardMetadata())
    rewards = np.array(score_sequences(runner, [ids for g in train_set for ids in g.input_ids]))
    normalization = Normalization(mean=float(rewards.mean()), std=max(float(rewards.std()), 1e-6))
    metrics: dict[str, Any] = {}
    temperature = 1.0
    if eval_groups:
        formatter = InputFormatter(
            runner.tokenizer, input_format=_format(config), max_length=config.max_length
        )  # type: ignore[arg-type]
        scores = score_pairs(runner, formatter, eval_groups)
        temperature = fit_temperature(scores.margins)
        metrics = write_evaluation(
            scores, temperature, output / "eval", title=f"Validation report: {output.name}", seed=seed
        )
    metadata = RewardMetadata(
        max_length=config.max_length,
        input_format=InputFormat(type=_format(config)),
        normalization=normalization,
        calibration=Calibration(temperature=temperature),
        provenance={
            "base_model": str(config.model),
            "seed": seed,
            "data": stats.as_dict(),
            "train_groups": len(train_set),
            "eval_groups": len(eval_groups),
            "training_loss": training_loss,
            "config": asdict(config),
            "eval_metrics": {k: v for k, v in metrics.items() if k != "accuracy_by_length"},
            "software": _versions(),
        },
    )
    save_metadata(output, metadata)
    return metrics


def _versions() -> dict[str, str]:
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def train(config: RewardTrainingConfig) -> Path:
    """Load data, split, and train one model or an ensemble; returns the output directory."""
    if config.model is None or not config.data or config.output is None:
        raise ValueError("--model, --data and --output are required (or --preset demo)")
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    groups, stats = load_preferences(config.data, skip_invalid=config.skip_invalid)
    if config.eval_data:
        eval_groups, eval_stats = load_preferences(config.eval_data, skip_invalid=config.skip_invalid)
        stats.files.update(eval_stats.files)
        train_groups = groups
    else:
        train_groups, eval_groups = split_holdout(groups, config.eval_fraction, config.seed)
    log.info(
        "training on %d groups, validating on %d; skipped: %s",
        len(train_groups),
        len(eval_groups),
        dict(stats.skipped) or "none",
    )
    if config.ensemble <= 1:
        train_member(config, train_groups, eval_groups, stats, output, config.seed)
        _write_rows(output, train_groups)
        return output
    members = []
    for index in range(config.ensemble):
        seed = config.seed + index
        member_groups = train_groups
        if config.bootstrap:
            rng = random.Random(seed)
            member_groups = [train_groups[rng.randrange(len(train_groups))] for _ in train_groups]
        name = f"member-{index}"
        train_member(config, member_groups, eval_groups, stats, output / name, seed)
        _write_rows(output / name, member_groups)
        members.append(EnsembleMember(path=name, name=name))
    provenance: dict[str, Any] = {
        "base_model": str(config.model),
        "members": config.ensemble,
        "seed": config.seed,
    }
    manifest = EnsembleManifest(members=members, provenance=provenance)
    save_manifest(output, manifest)
    if eval_groups:
        # The ensemble as served (members standardized, then aggregated), calibrated on its own.
        scores, _ = score_checkpoint(output, eval_groups, config.device)
        manifest.calibration = Calibration(temperature=fit_temperature(scores.margins))
        report = write_evaluation(
            scores,
            manifest.calibration.temperature,
            output / "eval",
            title=f"Validation report: ensemble {output.name}",
            seed=config.seed,
        )
        manifest.provenance["eval_metrics"] = {k: v for k, v in report.items() if k != "accuracy_by_length"}
        save_manifest(output, manifest)
    return output


def _write_rows(output: Path, groups: list[PreferenceGroup]) -> None:
    """Row hashes of the training data, so `reward-eval` can refuse to evaluate on them."""
    (output / TRAIN_ROWS_FILE).write_text("\n".join(sorted({g.row_hash for g in groups})) + "\n")
