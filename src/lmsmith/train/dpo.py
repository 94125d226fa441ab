"""DPO and its relatives as a loop objective: sigmoid (DPO), ipo, hinge (SLiC), simpo and orpo.

A batch holds every pair's chosen rows then its rejected rows, so one forward pass scores both. The
reference log-probs are computed once before training (`setup`) and stored with each pair: by the starting
model itself (full fine-tuning: it is the reference until the first update), with the LoRA adapter switched
off (no second copy in memory), or by `--ref-model` when given. SimPO and ORPO need no reference.

Formulas and logged names follow TRL (`DPOTrainer`, `CPOTrainer` for SimPO, `ORPOTrainer`), so runs compare:
`rewards/chosen`, `rewards/rejected`, `rewards/margins`, `rewards/accuracies`, `logps/chosen`, `logps/rejected`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmsmith.progress import console
from lmsmith.progress import task as progress_task
from lmsmith.train.objectives import SetupContext, Stats, sequence_logps

REFERENCE_FREE = ("simpo", "orpo")
FALLING_LOGS = 5  # warn when logps/chosen fell this many log records in a row


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable (ORPO's log-odds)."""
    return torch.where(x > -math.log(2), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def preference_loss(loss: str, beta: float, pc: torch.Tensor, pr: torch.Tensor, nc: torch.Tensor, nr: torch.Tensor,
                    rc: torch.Tensor | None = None, rr: torch.Tensor | None = None, label_smoothing: float = 0.0,
                    simpo_gamma: float = 0.5, rpo_alpha: float | None = None
                    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-pair losses and the implicit rewards (chosen, rejected) from summed log-probs `pc`/`pr` over
    `nc`/`nr` answer tokens, and the reference's `rc`/`rr` (unused by the reference-free losses)."""
    nc, nr = nc.clamp(min=1).to(pc.dtype), nr.clamp(min=1).to(pr.dtype)
    if loss in REFERENCE_FREE:
        ac, ar = pc / nc, pr / nr  # length-normalized log-probs
        if loss == "simpo":
            logits = (ac - ar) - simpo_gamma / beta
            per = (-(1 - label_smoothing) * F.logsigmoid(beta * logits) - label_smoothing * F.logsigmoid(-beta * logits))
        else:  # orpo: NLL of the chosen answer minus lambda * log sigmoid(log odds ratio)
            log_odds = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
            per = -ac - beta * F.logsigmoid(log_odds)
        reward_c, reward_r = beta * ac.detach(), beta * ar.detach()
    else:
        assert rc is not None and rr is not None, "DPO losses need reference log-probs"
        cl, rl = pc - rc, pr - rr  # log-ratios to the reference
        delta = cl - rl
        if loss == "sigmoid":
            per = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
        elif loss == "hinge":
            per = torch.relu(1 - beta * delta)
        elif loss == "ipo":  # per-token log-ratios, as TRL (and the IPO authors) normalize it
            per = (cl / nc - rl / nr - 1 / (2 * beta)) ** 2
        else:
            raise ValueError(f"unknown DPO loss {loss!r}")
        reward_c, reward_r = beta * cl.detach(), beta * rl.detach()
    if rpo_alpha:
        per = per + rpo_alpha * (-pc / nc)
    return per, reward_c, reward_r


class DPOLoss:
    name = "dpo"

    def __init__(self, cfg: Any):
        self.cfg = cfg
        self.stats = Stats()
        self.history: list[float] = []
        self.warned = False

    @property
    def needs_reference(self) -> bool:
        return self.cfg.loss not in REFERENCE_FREE

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int(batch["input_ids"].shape[0]) // 2

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logps, n = sequence_logps(model, batch)
        pc, pr = logps.chunk(2)
        nc, nr = n.chunk(2)
        ref = batch.get("ref_logps")
        rc = rr = None
        if self.needs_reference:
            if ref is None:
                raise RuntimeError("reference log-probs were not computed (DPOLoss.setup was not called)")
            rc, rr = ref[:, 0].to(pc.dtype), ref[:, 1].to(pc.dtype)
        c = self.cfg
        per, reward_c, reward_r = preference_loss(c.loss, c.beta, pc, pr, nc, nr, rc, rr, c.label_smoothing,
                                                  c.simpo_gamma, c.rpo_alpha)
        s = self.stats
        s.add("rewards/chosen", reward_c)
        s.add("rewards/rejected", reward_r)
        s.add("rewards/margins", reward_c - reward_r)
        s.add("rewards/accuracies", (reward_c > reward_r).float())
        s.add("logps/chosen", pc)
        s.add("logps/rejected", pr)
        return per.sum()

    def metrics(self, split: str = "train") -> dict[str, float]:
        out = self.stats.drain()
        if "logps/chosen" in out and split == "train":
            self._watch(out["logps/chosen"])
        return out

    def _watch(self, value: float) -> None:
        """Plain DPO on near-identical pairs pushes the chosen answer's own likelihood down; say so early."""
        self.history.append(value)
        h = self.history[-(FALLING_LOGS + 1):]
        if (not self.warned and len(h) == FALLING_LOGS + 1 and all(b < a for a, b in zip(h, h[1:]))
                and self.history[0] - value > 1.0):
            self.warned = True
            hint = "" if self.cfg.rpo_alpha else " add --rpo-alpha 1 (NLL on the chosen answer), or"
            console.print(f"[yellow]warning:[/] logps/chosen keeps falling ({self.history[0]:.2f} -> {value:.2f}): the "
                          f"preferred answers are losing likelihood and greedy output may degenerate;{hint} lower "
                          "--lr / raise --beta")

    # -- reference log-probs, once ------------------------------------------------------------------------
    def setup(self, ctx: SetupContext) -> None:
        if not self.needs_reference:
            return
        datasets = [d for d in (ctx.data.train, ctx.data.eval) if d]
        total = sum(len(d) for d in datasets)
        if self.cfg.ref_model:
            from lmsmith.models import load_model

            ref_model = load_model(self.cfg.ref_model, dtype="float32" if ctx.device.type == "cpu" else "bfloat16",
                                   device=str(ctx.device), merge_adapter=True)
            off = nullcontext()
        else:
            ref_model, off = ctx.model, adapter_off(ctx.model)
        was_training = ref_model.training
        ref_model.eval()
        bs = max(1, self.cfg.batch_size)
        with torch.no_grad(), off, progress_task("reference log-probs", total) as bar:
            for d in datasets:
                for i in range(0, len(d), bs):
                    rows = [d[j] for j in range(i, min(len(d), i + bs))]
                    batch = ctx.data.collate(rows)
                    batch = {k: v.to(ctx.device) for k, v in batch.items()}
                    with ctx.amp():
                        logps, _ = sequence_logps(ref_model, batch)
                    pc, pr = logps.double().chunk(2)
                    for r, a, b in zip(rows, pc.tolist(), pr.tolist()):
                        r.ref = (a, b)
                    bar(len(rows))
        if was_training:
            ref_model.train()
        if self.cfg.ref_model:
            del ref_model


def adapter_off(model: nn.Module):
    """A context in which a PEFT model runs as its base (the reference); a no-op for plain models."""
    from lmsmith.train.distributed import unwrap

    inner = unwrap(model)
    return inner.disable_adapter() if hasattr(inner, "disable_adapter") and hasattr(inner, "peft_config") \
        else nullcontext()
