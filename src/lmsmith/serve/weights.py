"""Where the engine's weights come from: a resolved model ref, its safetensors files, its state dict."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from lmsmith.errors import LmsmithError
from lmsmith.models import ResolvedModel, load_model, resolve_model
from lmsmith.quant.lowrank_format import densify_state, section_of


def weight_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [model_dir / n for n in names]
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise LmsmithError(f"no safetensors weights in {model_dir}", "import the model with safetensors weights")
    return files


def read_state_dict(model_dir: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    sd: dict[str, torch.Tensor] = {}
    for f in weight_files(model_dir):
        with safe_open(str(f), framework="pt", device="cpu") as fh:
            for name in fh.keys():
                t = fh.get_tensor(name)
                # quantized weights and their float32 scales/zero points stay as stored
                sd[name] = t.to(dtype) if t.is_floating_point() and not name.endswith((".scales", ".zeros")) else t
    lowrank = section_of(model_dir)
    return densify_state(sd, lowrank["ranks"]) if lowrank else sd  # factorized linears: dense for the engine


class ModelHandle:
    """What the engine serves: a resolved ref, its HF config, and where the weights come from (an adapter is
    merged into its base). Built from a ref once per process; pass a `ResolvedModel` to reuse a resolution."""

    def __init__(self, ref: str | ResolvedModel):
        self.model = resolve_model(ref)
        self.handle = self.model.handle
        self.base = self.model.base
        self.is_adapter = self.model.is_adapter
        self.config = self.model.hf_config
        self.quant = self.model.quant

    def state_dict(self, dtype: torch.dtype) -> dict[str, torch.Tensor]:
        if self.is_adapter:
            model = load_model(self.model, dtype=torch.float32, device="cpu", merge_adapter=True)
            return {k: v.to(dtype) for k, v in model.state_dict().items()}
        return read_state_dict(self.base.dir, dtype)
