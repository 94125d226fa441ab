"""The on-disk format of low-rank (factorized) linears: `X.down.weight` and `X.up.weight` for each factorized
`X` and an `lmsmith_lowrank` section in config.json naming the ranks. Ground floor, so the model loader and the
engine read it; `lmsmith.compress.lowrank` writes it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmsmith.errors import LmsmithError

LOWRANK_KEY = "lmsmith_lowrank"


class LowRankLinear(nn.Module):
    """nn.Linear's interface computed as up(down(x)); the bias lives on `up`."""

    def __init__(self, in_features: int, out_features: int, rank: int, bias: bool, dtype: torch.dtype = torch.float32,
                 device=None):
        super().__init__()
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.down = nn.Linear(in_features, rank, bias=False, dtype=dtype, device=device)
        self.up = nn.Linear(rank, out_features, bias=bias, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(self.down(x))

    @property
    def weight(self) -> torch.Tensor:  # the product, for code that reads `.weight` (e.g. tied-weight checks)
        return self.up.weight @ self.down.weight

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, rank={self.rank}"


def section_of(path: Path) -> dict[str, Any] | None:
    cfg = path / "config.json"
    if not cfg.is_file():
        return None
    try:
        s = json.loads(cfg.read_text()).get(LOWRANK_KEY)
    except ValueError:
        return None
    return s if isinstance(s, dict) and isinstance(s.get("ranks"), dict) else None


def is_lowrank_dir(path: Path) -> bool:
    return section_of(Path(path)) is not None


def load_lowrank(model_dir: str | Path, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"
                 ) -> nn.Module:
    """Build the model from config.json, swap in `LowRankLinear`s of the stored ranks, load the factors."""
    from lmsmith.quant.format import build_empty, read_state

    model_dir = Path(model_dir)
    section = section_of(model_dir)
    if section is None:
        raise LmsmithError(f"{model_dir} is not a low-rank model (no {LOWRANK_KEY} in config.json)")
    model = build_empty(model_dir, dtype)
    for name, rank in section["ranks"].items():
        lin = model.get_submodule(name)
        model.set_submodule(name, LowRankLinear(lin.in_features, lin.out_features, int(rank), lin.bias is not None,
                                                dtype))
    missing, unexpected = model.load_state_dict(read_state(model_dir), strict=False)
    tied = getattr(model.config, "tie_word_embeddings", False)
    missing = [k for k in missing if not (tied and k.endswith("lm_head.weight"))]
    if missing or unexpected:
        raise LmsmithError(f"{model_dir}: weights do not match the low-rank layout "
                           f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")
    if tied and hasattr(model, "tie_weights"):
        model.tie_weights()
    return model.to(dtype).to(device).eval()


def densify_state(state: dict[str, torch.Tensor], ranks: dict[str, int]) -> dict[str, torch.Tensor]:
    """Multiply stored factors back into `X.weight` (and move `X.up.bias` to `X.bias`) for dense engines."""
    for name in ranks:
        up, down = state.pop(f"{name}.up.weight"), state.pop(f"{name}.down.weight")
        state[f"{name}.weight"] = (up.float() @ down.float()).to(up.dtype)
        if f"{name}.up.bias" in state:
            state[f"{name}.bias"] = state.pop(f"{name}.up.bias")
    return state
