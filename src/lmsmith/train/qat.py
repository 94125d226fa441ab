"""Quantization-aware training: the forward pass sees each linear's weight rounded to the grid it will be
stored on; the backward pass treats the rounding as the identity (straight-through estimator), so the
full-precision weights learn to sit where rounding hurts least.

The grids are exactly those of `lmsmith compress quantize` (int4: groups of `group_size` input features
mapped min..max onto 0..15 with a float zero point; int8: symmetric per output channel, ±127). At the end
of training the weights are replaced by their rounded values (`bake`), so the saved model lies on the
grid and `lmsmith compress quantize REF --method int4` converts it without any further loss (round to
nearest of a value already on the grid is the value itself). config.json records the grid under
`lmsmith_qat` and `compress quantize` picks up its group size.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parametrize

from lmsmith.errors import LmsmithError

QAT_KEY = "lmsmith_qat"
METHODS = ("int4", "int8")
GROUP_SIZES = (128, 64, 32)


def fake_quant(w: torch.Tensor, method: str, group_size: int | None) -> torch.Tensor:
    """The weight rounded to the storage grid, in w's dtype (no gradient: see FakeQuant)."""
    wf = w.detach().float()
    if method == "int8":
        scale = (wf.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-10)
        return (torch.round(wf / scale).clamp_(-127, 127) * scale).to(w.dtype)
    n, k = wf.shape
    g = int(group_size or k)
    wg = wf.reshape(n, k // g, g)
    lo, hi = wg.amin(dim=-1, keepdim=True), wg.amax(dim=-1, keepdim=True)
    scale = ((hi - lo) / 15.0).clamp(min=1e-10)
    q = torch.round((wg - lo) / scale).clamp_(0, 15)
    zero = -lo / scale
    return ((q - zero) * scale).reshape(n, k).to(w.dtype)


class FakeQuant(nn.Module):
    """Weight parametrization: forward value on the grid, gradient straight through to the float weight."""

    def __init__(self, method: str, group_size: int | None):
        super().__init__()
        self.method, self.group_size = method, group_size

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w + (fake_quant(w, self.method, self.group_size) - w).detach()


def output_names(model: nn.Module) -> set[str]:
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    return {n for n, m in model.named_modules() if (out is not None and m is out) or n.split(".")[-1] == "lm_head"}


def targets(model: nn.Module) -> dict[str, nn.Linear]:
    """The linears `compress quantize` quantizes by default (all but the output head)."""
    heads = output_names(model)
    return {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear) and n not in heads}


def pick_group_size(model: nn.Module, group_size: int | None) -> int:
    widths = {m.in_features for m in targets(model).values()}
    if group_size is not None:
        bad = sorted(k for k in widths if k % group_size)
        if bad:
            raise LmsmithError(f"--qat-group-size {group_size} does not divide layer width {bad[0]}",
                               f"use one of {[g for g in GROUP_SIZES if all(k % g == 0 for k in widths)]}")
        return group_size
    for g in GROUP_SIZES:
        if all(k % g == 0 for k in widths):
            return g
    raise LmsmithError(f"no int4 group size in {GROUP_SIZES} divides every layer width", "use --qat int8")


def attach(model: nn.Module, method: str, group_size: int | None) -> dict[str, object]:
    """Fake-quantize every target linear's weight; returns the grid description stored with the model."""
    if method not in METHODS:
        raise LmsmithError(f"unknown --qat method '{method}'", f"use one of: {', '.join(METHODS)}")
    g = pick_group_size(model, group_size) if method == "int4" else None
    lins = targets(model)
    if not lins:
        raise LmsmithError("--qat found no linear layers to fake-quantize")
    for lin in lins.values():
        parametrize.register_parametrization(lin, "weight", FakeQuant(method, g))
    return {"method": method, "group_size": g, "modules": len(lins)}


@torch.no_grad()
def bake(model: nn.Module) -> dict[str, object] | None:
    """Replace each fake-quantized weight by its rounded value (a plain parameter again); returns the grid
    (method, group size, number of linears) for config.json, or None when nothing was fake-quantized."""
    grid: dict[str, object] | None = None
    n = 0
    for m in list(model.modules()):
        if not parametrize.is_parametrized(m, "weight"):
            continue
        fq = [p for p in m.parametrizations.weight if isinstance(p, FakeQuant)]
        if fq:
            grid = {"method": fq[0].method, "group_size": fq[0].group_size}
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)
            n += 1
    return None if grid is None else {**grid, "modules": n}
