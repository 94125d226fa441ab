"""Which objective each training task minimizes: a table over the objective modules (objectives.py holds the
protocol and the causal-LM loss; dpo.py and reward.py build on it), so none of them imports another's users."""

from __future__ import annotations

from typing import Any

from lmsmith.errors import LmsmithError
from lmsmith.train.dpo import DPOLoss
from lmsmith.train.objectives import CausalLMLoss, Objective
from lmsmith.train.reward import BradleyTerryLoss


def make_objective(cfg: Any, device: Any = None, tokenizer: Any = None) -> Objective:
    """The objective of a training task. GRPO's lives in `lmsmith.align` (it needs the engine) and is passed
    to `train(cfg, objective=...)` by its command; the loop never imports it. Distillation loads its teacher."""
    if cfg.task in ("pretrain", "sft"):
        return CausalLMLoss()
    if cfg.task == "distill":
        from lmsmith.train.distill import make_distill_objective

        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        return make_distill_objective(cfg, device, pad or 0)
    if cfg.task == "dpo":
        return DPOLoss(cfg)
    if cfg.task == "rm":
        return BradleyTerryLoss(cfg)
    raise LmsmithError(f"task {cfg.task!r} has no built-in objective",
                       "pass one to train(cfg, objective=...); for GRPO use lmsmith.align.grpo.train_grpo(cfg)")
