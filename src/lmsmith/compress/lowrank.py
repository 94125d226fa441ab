"""Low-rank factorization: replace a linear W [N, K] by two thin ones, up [N, r] @ down [r, K].

- svd: the truncated SVD of W (best rank-r approximation of the weight itself).
- asvd (activation-aware SVD, Yuan et al., 2023): the SVD of W·S with S = diag(mean|x_j|^alpha) from the
  calibration text, then down = Σ^½ Vᵀ S⁻¹: the error lands on input channels that carry little signal.

`--rank-ratio` is the share of each linear's parameters the two factors keep: r = ratio · N·K / (N + K).
The directory stores the factors (`X.up.weight`, `X.down.weight`) and config.json lists the ranks under
`lmsmith_lowrank`; `load_lowrank` builds the model with `LowRankLinear`s, and the serving engine, which
runs dense weights, multiplies the factors back at load (`densify_state`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmsmith.compress.calibration import CalibrationSpec, InputStats, calibration_ids, layerwise, linears_of
from lmsmith.compress.dense import load_float_model, register_compressed, save_dense, stored_dtype
from lmsmith.errors import LmsmithError
from lmsmith.quant.lowrank_format import (
    LOWRANK_KEY,
    LowRankLinear,
)
from lmsmith.quant.passes import target_linears


@dataclass
class LowRankConfig:
    rank_ratio: float = 0.5
    method: str = "svd"
    calibration: str | None = None
    samples: int = 128
    seq_len: int = 512
    seed: int = 0
    alpha: float = 0.5
    batch_size: int = 4

    def check(self) -> None:
        if not 0 < self.rank_ratio < 1:
            raise LmsmithError(f"--rank-ratio {self.rank_ratio} is not between 0 and 1", "use e.g. --rank-ratio 0.5")
        if self.method not in ("svd", "asvd"):
            raise LmsmithError(f"unknown low-rank method '{self.method}'", "use svd or asvd")
        if self.method == "asvd" and not self.calibration:
            raise LmsmithError("--method asvd needs calibration text", "pass --calibration FILE, or use --method svd")


def rank_for(n: int, k: int, ratio: float) -> int:
    return max(1, int(ratio * n * k / (n + k)))


@torch.no_grad()
def factorize(w: torch.Tensor, rank: int, act_scale: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(up [N, r], down [r, K]) with up @ down ≈ W, error weighted by `act_scale` per input channel."""
    w = w.float()
    s = act_scale.float().clamp(min=1e-6) if act_scale is not None else None
    u, sig, vh = torch.linalg.svd(w * s[None, :] if s is not None else w, full_matrices=False)
    root = sig[:rank].sqrt()
    up = u[:, :rank] * root[None, :]
    down = root[:, None] * vh[:rank]
    if s is not None:
        down = down / s[None, :]
    return up, down


def to_lowrank(linear: nn.Linear, rank: int, act_scale: torch.Tensor | None = None) -> LowRankLinear:
    up, down = factorize(linear.weight, rank, act_scale)
    m = LowRankLinear(linear.in_features, linear.out_features, rank, linear.bias is not None, linear.weight.dtype,
                      linear.weight.device)
    m.up.weight.data.copy_(up)
    m.down.weight.data.copy_(down)
    if linear.bias is not None:
        m.up.bias.data.copy_(linear.bias)
    return m


@torch.no_grad()
def lowrank_model_(model: nn.Module, tokenizer, cfg: LowRankConfig) -> dict[str, int]:
    """Factorize the decoder's linears in place (those where it saves parameters); returns {name: rank}."""
    cfg.check()
    targets = {n: m for n, m in target_linears(model)}
    ranks = {n: rank_for(m.out_features, m.in_features, cfg.rank_ratio) for n, m in targets.items()}
    ranks = {n: r for n, r in ranks.items() if r * (targets[n].in_features + targets[n].out_features)
             < targets[n].in_features * targets[n].out_features}
    if cfg.method == "svd":
        for n, r in ranks.items():
            model.set_submodule(n, to_lowrank(targets[n], r))
        return ranks
    assert cfg.calibration is not None
    ids = calibration_ids(tokenizer, CalibrationSpec(cfg.calibration, cfg.samples, cfg.seq_len, cfg.seed))
    names = {id(m): n for n, m in model.named_modules()}

    def process(i: int, layer: nn.Module, forward) -> None:
        prefix = names[id(layer)]
        lins = {n: m for n, m in linears_of(layer).items() if f"{prefix}.{n}" in ranks}
        with InputStats(lins) as st:
            forward()
        for n, lin in lins.items():
            layer.set_submodule(n, to_lowrank(lin, ranks[f"{prefix}.{n}"], st.abs_mean(n).pow(cfg.alpha)))

    layerwise(model, ids, process, "asvd", cfg.batch_size)
    return ranks


def params_of(model: nn.Module) -> int:
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def lowrank_to_dir(source_dir: Path, out_dir: Path, cfg: LowRankConfig) -> dict[str, Any]:
    from lmsmith.models import load_tokenizer

    cfg.check()
    model = load_float_model(source_dir)
    before = params_of(model)
    ranks = lowrank_model_(model, load_tokenizer(str(source_dir)), cfg)
    if not ranks:
        raise LmsmithError(f"--rank-ratio {cfg.rank_ratio} saves nothing on this model's linears", "use a smaller ratio")
    info = {**{k: v for k, v in asdict(cfg).items() if k not in ("calibration", "batch_size")}, "ranks": ranks,
            "params_before": before, "params_after": params_of(model), "num_factorized": len(ranks)}
    save_dense(model, source_dir, out_dir, (LOWRANK_KEY, info), stored_dtype(source_dir))
    return info


def register_lowrank(ref: str, name: str, cfg: LowRankConfig, command: str | None = None):
    from lmsmith.compress.ptq import calibration_ref
    from lmsmith.registry.registry import DataRef

    def describe(info: dict[str, Any]) -> dict[str, Any]:
        data = [DataRef(**calibration_ref(cfg.calibration))] if cfg.calibration and cfg.method == "asvd" else []
        return {"config": {"lowrank": {k: v for k, v in info.items() if k != "ranks"}}, "data": data,
                "tags": {"lowrank": cfg.method, "rank_ratio": str(cfg.rank_ratio)},
                "metrics": {"params": info["params_after"], "parent_params": info["params_before"]}}

    cfg.check()
    return register_compressed(ref, name, lambda src, out: lowrank_to_dir(src, out, cfg), describe,
                               "merge it first (`lmsmith train merge`), then factorize", command)
