"""Pruning: zero out a share of each linear's weights, chosen by magnitude, Wanda or SparseGPT.

- magnitude: drop the smallest |W| (no calibration).
- wanda (Sun et al., 2023): drop the smallest |W_ij| * ||X_j||, weights scaled by their input's norm on
  the calibration text; one pass, no weight update.
- sparsegpt (Frantar & Alistarh, 2023): choose the mask block by block from w^2 / [H^-1]_jj^2 and push
  each pruned weight's error onto the columns not yet visited (the OBS update GPTQ uses for rounding).

Sparsity is exact per output row (every row loses the same number of weights, as Wanda compares
within a row), or, with pattern 2:4, exactly 2 of every 4 consecutive input weights: the layout NVIDIA's
sparse tensor cores (and PyTorch's semi-structured kernels) accelerate. lm_head and embeddings are not
pruned. The result is an ordinary dense HF directory (zeros stored), so every loader reads it; config.json
records the pattern under `lmsmith_sparsity`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmsmith.compress.calibration import (
    CalibrationSpec,
    InputStats,
    calibration_ids,
    layerwise,
    linears_of,
)
from lmsmith.compress.dense import load_float_model, register_compressed, save_dense, stored_dtype
from lmsmith.compress.gptq import inverse_hessian_chol, single_thread
from lmsmith.errors import LmsmithError
from lmsmith.quant.passes import target_linears

METHODS = ("magnitude", "wanda", "sparsegpt")
SPARSITY_KEY = "lmsmith_sparsity"
BLOCK = 128


@dataclass
class PruneConfig:
    method: str = "wanda"
    sparsity: float = 0.5
    pattern: str | None = None  # "N:M", e.g. "2:4"
    calibration: str | None = None
    samples: int = 128
    seq_len: int = 512
    seed: int = 0
    damp: float = 0.01
    batch_size: int = 4

    def nm(self) -> tuple[int, int] | None:
        if not self.pattern:
            return None
        try:
            n, m = (int(x) for x in self.pattern.split(":"))
        except ValueError:
            raise LmsmithError(f"--pattern {self.pattern} is not N:M", "use e.g. --pattern 2:4") from None
        if not 0 < n < m:
            raise LmsmithError(f"--pattern {self.pattern}: N must be between 0 and M", "use e.g. --pattern 2:4")
        return n, m

    def check(self) -> None:
        if self.method not in METHODS:
            raise LmsmithError(f"unknown pruning method '{self.method}'", f"use one of: {', '.join(METHODS)}")
        nm = self.nm()
        if nm is None and not 0 < self.sparsity < 1:
            raise LmsmithError(f"--sparsity {self.sparsity} is not between 0 and 1", "use e.g. --sparsity 0.5")
        if self.method != "magnitude" and not self.calibration:
            raise LmsmithError(f"--method {self.method} needs calibration text",
                               "pass --calibration FILE, or use --method magnitude")

    @property
    def effective_sparsity(self) -> float:
        nm = self.nm()
        return nm[0] / nm[1] if nm else self.sparsity


def prune_mask(score: torch.Tensor, sparsity: float, nm: tuple[int, int] | None) -> torch.Tensor:
    """True where a weight is dropped: the lowest scores, `round(sparsity * K)` per row, or N of every M."""
    rows, k = score.shape
    if nm is not None:
        n, m = nm
        if k % m:
            raise LmsmithError(f"pattern {n}:{m} needs in_features divisible by {m} (got {k})")
        idx = torch.topk(score.reshape(rows, k // m, m), n, dim=-1, largest=False).indices
        mask = torch.zeros(rows, k // m, m, dtype=torch.bool, device=score.device)
        return mask.scatter_(-1, idx, True).reshape(rows, k)
    n_drop = int(round(sparsity * k))
    mask = torch.zeros_like(score, dtype=torch.bool)
    if n_drop:
        mask.scatter_(1, torch.topk(score, n_drop, dim=1, largest=False).indices, True)
    return mask


@torch.no_grad()
@single_thread()
def sparsegpt_prune(w: torch.Tensor, h: torch.Tensor, sparsity: float, nm: tuple[int, int] | None,
                    damp: float = 0.01, block: int = BLOCK) -> torch.Tensor:
    """SparseGPT on one weight [N, K] with input Hessian [K, K]; returns the pruned, error-corrected weight."""
    w = w.detach().float().clone()
    h = h.detach().float().clone()
    n, k = w.shape
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = inverse_hessian_chol(h, damp)
    total = int(round(sparsity * k))
    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1)
        if nm is None:  # this block's share of each row's pruning budget (sums exactly to `total`)
            count = int(round(total * i2 / k)) - int(round(total * i1 / k))
            mask1 = prune_mask(w1.pow(2) / d[None, :].pow(2), count / (i2 - i1), None) if count else \
                torch.zeros_like(w1, dtype=torch.bool)
        else:
            mask1 = torch.zeros_like(w1, dtype=torch.bool)
        for i in range(i2 - i1):
            if nm is not None and i % nm[1] == 0:
                cols = slice(i, i + nm[1])
                mask1[:, cols] = prune_mask(w1[:, cols].pow(2) / d[cols][None, :].pow(2), 0, nm)
            col = w1[:, i]
            q = torch.where(mask1[:, i], torch.zeros_like(col), col)
            e = err1[:, i]
            torch.sub(col, q, out=e).div_(hinv1[i, i])
            w1[:, i:].addr_(e, hinv1[i, i:], alpha=-1.0)
            w1[:, i] = q
        w[:, i1:i2] = w1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w


@torch.no_grad()
def prune_model_(model: nn.Module, tokenizer, cfg: PruneConfig) -> dict[str, Any]:
    """Prune the model's decoder linears in place; returns {module: sparsity} measured afterwards."""
    cfg.check()
    nm = cfg.nm()
    sparsity = cfg.effective_sparsity
    targets = dict(target_linears(model))
    if cfg.method == "magnitude":
        for lin in targets.values():
            lin.weight.masked_fill_(prune_mask(lin.weight.abs().float(), sparsity, nm), 0.0)
    else:
        assert cfg.calibration is not None
        ids = calibration_ids(tokenizer, CalibrationSpec(cfg.calibration, cfg.samples, cfg.seq_len, cfg.seed))
        names = {id(m): n for n, m in model.named_modules()}

        def process(i: int, layer: nn.Module, forward) -> None:
            prefix = names[id(layer)]
            lins = {n: m for n, m in linears_of(layer).items() if f"{prefix}.{n}" in targets}
            with InputStats(lins, hessian=cfg.method == "sparsegpt") as st:
                forward()
            if cfg.method == "wanda":
                for n, lin in lins.items():
                    score = lin.weight.abs().float() * st.col_norm(n)[None, :]
                    lin.weight.masked_fill_(prune_mask(score, sparsity, nm), 0.0)
                return
            for grp in st.groups(list(lins)):
                w = sparsegpt_prune(torch.cat([lins[n].weight for n in grp]), st.hessian(grp[0]), sparsity, nm, cfg.damp)
                row = 0
                for n in grp:
                    lin = lins[n]
                    lin.weight.copy_(w[row:row + lin.out_features].to(lin.weight.dtype))
                    row += lin.out_features

        layerwise(model, ids, process, f"{cfg.method} pruning", cfg.batch_size)
    return {n: float((lin.weight == 0).float().mean()) for n, lin in targets.items()}


def row_sparsity(w: torch.Tensor) -> torch.Tensor:
    return (w == 0).float().mean(dim=1)


def prune_to_dir(source_dir: Path, out_dir: Path, cfg: PruneConfig) -> dict[str, Any]:
    from lmsmith.models import load_tokenizer

    cfg.check()
    model = load_float_model(source_dir)
    per_module = prune_model_(model, load_tokenizer(str(source_dir)), cfg)
    info = {k: v for k, v in asdict(cfg).items() if k not in ("calibration", "batch_size")}
    info["measured_sparsity"] = sum(per_module.values()) / max(len(per_module), 1)
    save_dense(model, source_dir, out_dir, (SPARSITY_KEY, info), stored_dtype(source_dir))
    return info


def register_pruned(ref: str, name: str, cfg: PruneConfig, command: str | None = None):
    from lmsmith.compress.ptq import calibration_ref
    from lmsmith.registry.registry import DataRef

    def describe(info: dict[str, Any]) -> dict[str, Any]:
        data = [DataRef(**calibration_ref(cfg.calibration))] if cfg.calibration and cfg.method != "magnitude" else []
        return {"config": {"prune": info}, "data": data, "metrics": {"sparsity": info["measured_sparsity"]},
                "tags": {"pruning": cfg.method, "sparsity": cfg.pattern or str(cfg.sparsity)}}

    cfg.check()
    return register_compressed(ref, name, lambda src, out: prune_to_dir(src, out, cfg), describe,
                               "merge it first (`lmsmith train merge`), then prune", command)
