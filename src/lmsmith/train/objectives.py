"""Training objectives: what the loop minimizes. The loop itself never changes for a new one.

An objective is called on a model and a device batch and returns the *summed* loss over the batch's target
units; `count` says how many units a batch has (tokens for language modelling, pairs for DPO and reward
models, completion tokens or sequences for GRPO). The loop divides the summed loss of all micro-batches of
an optimizer step by their total count, so gradient accumulation gives exactly the gradient of one big batch.

Optional hooks, called by the loop when an objective has them:

- `setup(ctx)` once after the model is built and before any checkpoint is loaded (DPO caches the reference
  log-probs here; GRPO starts its rollout engine). `ctx` is a `SetupContext`.
- `prepare(micro) -> micro` turns the loader's micro-batches into training batches (GRPO: rollouts + rewards).
- `after_update(model)` after each optimizer step (GRPO: push the new weights into the rollout engine).
- `metrics() -> dict` returns and resets the statistics gathered since the last call; the loop logs them
  with each training record and with each evaluation (so they carry TRL's names: `rewards/chosen`, ...).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Protocol

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


@dataclass
class SetupContext:
    """What an objective's `setup` hook may use: the (wrapped) model, data, config and the autocast context."""

    model: nn.Module
    data: Any
    cfg: Any
    device: torch.device
    amp: Callable[[], Any]
    tokenizer: Any
    base_ref: str | None


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


def token_logps(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """log p(label) per position, 0 where the label is IGNORE_INDEX. `logits[:, t]` predicts `labels[:, t]`."""
    mask = labels != IGNORE_INDEX
    logits = logits.float()
    picked = logits.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked - torch.logsumexp(logits, dim=-1)) * mask


def sequence_logps(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """(summed log-prob of the labelled tokens, their count) per row."""
    inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
    logits = model(**inputs, use_cache=False).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    return token_logps(logits, labels).sum(-1), (labels != IGNORE_INDEX).sum(-1)


class Stats:
    """Sums of per-example statistics kept on the device (no host sync per step); read at log time."""

    def __init__(self) -> None:
        self.sums: dict[str, torch.Tensor] = {}
        self.n: dict[str, int] = {}
        self.mins: dict[str, torch.Tensor] = {}
        self.maxs: dict[str, torch.Tensor] = {}

    def add(self, name: str, values: torch.Tensor) -> None:
        v = values.detach().float().reshape(-1)
        self.sums[name] = self.sums.get(name, 0) + v.sum()
        self.n[name] = self.n.get(name, 0) + v.numel()

    def extrema(self, name: str, values: torch.Tensor) -> None:
        v = values.detach().float().reshape(-1)
        self.mins[name] = torch.minimum(self.mins[name], v.min()) if name in self.mins else v.min()
        self.maxs[name] = torch.maximum(self.maxs[name], v.max()) if name in self.maxs else v.max()

    def drain(self) -> dict[str, float]:
        out = {k: float(s) / max(self.n[k], 1) for k, s in self.sums.items()}
        out.update({f"min_{k}": float(v) for k, v in self.mins.items()})
        out.update({f"max_{k}": float(v) for k, v in self.maxs.items()})
        self.__init__()
        return out


OBJECTIVES = {"pretrain": CausalLMLoss, "sft": CausalLMLoss}


def make_objective(cfg, device: torch.device, tokenizer) -> Objective:
    """The objective of a run: its task's class, or distillation against a loaded teacher."""
    if cfg.task == "distill":
        from lmsmith.train.distill import make_distill_objective

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return make_distill_objective(cfg, device, pad or 0)
    return OBJECTIVES[cfg.task]()
