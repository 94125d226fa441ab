"""Training objectives. An objective maps (model, batch) to a summed loss and the number of target units.

The loop divides the summed loss of all micro-batches of an optimizer step by their total target count,
so gradient accumulation gives exactly the gradient of one big batch. New objectives (reward model,
DPO) implement the same two methods and reuse the loop unchanged.
"""

from __future__ import annotations

from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

from lmsmith.data.chat import IGNORE_INDEX

MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


class Objective(Protocol):
    name: str

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        """Target units in the batch (tokens for language modelling), known before the forward pass."""

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Summed (not averaged) loss over the batch's target units."""


class CausalLMLoss:
    """Next-token cross-entropy over positions whose label is not IGNORE_INDEX (shifted by one)."""

    name = "causal_lm"

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        logits = model(**inputs, use_cache=False).logits
        logits = logits[:, :-1].float()
        labels = batch["labels"][:, 1:]
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")


OBJECTIVES = {"pretrain": CausalLMLoss, "sft": CausalLMLoss}


def make_objective(cfg, device: torch.device, tokenizer) -> Objective:
    """The objective of a run: its task's class, or distillation against a loaded teacher."""
    if cfg.task == "distill":
        from lmsmith.train.distill import make_distill_objective

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return make_distill_objective(cfg, device, pad or 0)
    return OBJECTIVES[cfg.task]()
