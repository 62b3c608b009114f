"""Bradley-Terry preference loss over comparison groups (pairs, or K-wise rankings as in InstructGPT).

All responses of a batch go through one concatenated forward pass; pairs index into its rewards.
Every group weighs the same: a K-response ranking contributes the mean over its K-choose-2 pairs,
so a plain pair batch reduces to the usual `mean(-logsigmoid(r_chosen - r_rejected - margin))`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reward_model.tensors import pad_batch
from training.data import EncodedGroup


@dataclass(frozen=True)
class LossOutput:
    """The loss and the per-pair quantities logged and evaluated."""

    loss: torch.Tensor
    margins: torch.Tensor
    chosen: torch.Tensor
    rejected: torch.Tensor


def preference_loss(
    rewards: torch.Tensor,
    winners: torch.Tensor,
    losers: torch.Tensor,
    margins: torch.Tensor,
    pair_weights: torch.Tensor,
    center_coef: float = 0.0,
) -> LossOutput:
    """`sum_w w * -logsigmoid(r_w - r_l - margin)` plus `center_coef * mean((r_w + r_l)^2)`."""
    chosen, rejected = rewards[winners], rewards[losers]
    diff = chosen - rejected
    loss = (pair_weights * -F.logsigmoid(diff - margins)).sum()
    if center_coef:
        loss = loss + center_coef * torch.mean((chosen + rejected) ** 2)
    return LossOutput(loss, diff, chosen, rejected)


class PreferenceCollator:
    """Flatten a batch of groups into one right-padded forward pass plus pair indices and weights."""

    def __init__(self, pad_id: int) -> None:
        self.pad_id = pad_id

    def __call__(self, groups: Sequence[EncodedGroup]) -> dict[str, torch.Tensor]:
        """Collate groups; each group's pairs share weight 1 / (pairs in group * groups in batch)."""
        sequences: list[list[int]] = []
        winners: list[int] = []
        losers: list[int] = []
        margins: list[float] = []
        weights: list[float] = []
        pair_groups: list[int] = []
        for index, group in enumerate(groups):
            offset = len(sequences)
            sequences.extend(group.input_ids)
            for winner, loser, margin in group.pairs:
                winners.append(offset + winner)
                losers.append(offset + loser)
                margins.append(margin)
                weights.append(1.0 / (len(group.pairs) * len(groups)))
                pair_groups.append(index)
        batch = pad_batch(sequences, self.pad_id)
        return {
            "input_ids": batch.input_ids,
            "attention_mask": batch.attention_mask,
            "winners": torch.tensor(winners, dtype=torch.long),
            "losers": torch.tensor(losers, dtype=torch.long),
            "margins": torch.tensor(margins, dtype=torch.float32),
            "pair_weights": torch.tensor(weights, dtype=torch.float32),
            "pair_groups": torch.tensor(pair_groups, dtype=torch.long),
        }


def group_rows(margins: torch.Tensor, pair_groups: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pair margins as a [groups, most pairs] table, and a same-shaped 1/0 mask of real entries."""
    groups = int(pair_groups[-1]) + 1  # the collator numbers groups 0.. in order; each has a pair
    counts = torch.bincount(pair_groups, minlength=groups)
    starts = torch.cumsum(counts, 0) - counts
    columns = torch.arange(len(pair_groups), device=margins.device) - starts[pair_groups]
    table = margins.new_zeros((groups, int(counts.max())))
    real = torch.zeros_like(table)
    table[pair_groups, columns] = margins
    real[pair_groups, columns] = 1.0
    return table, real
