"""What the compress stage's rewrites of float weights share: load the unquantized model, save the result as a
dense HF directory next to its source's tokenizer and generation files (pruning and low-rank factorization), and
register any compressed output of a registered model with its lineage (those two and calibrated quantization)."""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from lmsmith.compress.calibration import decoder_layers
from lmsmith.errors import LmsmithError
from lmsmith.models import is_quantized, load_model, resolve_model
from lmsmith.registry.registry import Lineage, Registry


def stored_dtype(source_dir: Path) -> torch.dtype:
    """The dtype the source's weights are stored in (what the output is saved in)."""
    return resolve_model(str(source_dir), verify=False).stored_dtype


def load_float_model(source_dir: Path) -> nn.Module:
    """The unquantized model in float32 on the CPU (a quantized source is refused: compress its parent)."""
    if is_quantized(source_dir):
        raise LmsmithError(f"{source_dir} is quantized", "compress the unquantized parent model, then quantize")
    model = load_model(str(source_dir), dtype=torch.float32, device="cpu")
    decoder_layers(model)
    return model


def save_dense(model: nn.Module, source_dir: Path, out_dir: Path, section: tuple[str, dict[str, Any]] | None,
               dtype: torch.dtype | None = None) -> Path:
    """Write a full-precision model directory (weights cast to `dtype`), copying tokenizer/generation files;
    `section` (key, value) is recorded in its config.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    if dtype is not None:
        model = model.to(dtype)
    model.save_pretrained(out_dir)
    for p in sorted(source_dir.iterdir()):
        if p.is_file() and p.suffix != ".safetensors" and not (out_dir / p.name).exists() and p.name not in (
                "model.safetensors.index.json", "lmsmith.json"):
            shutil.copy2(p, out_dir / p.name)
    if section is not None:
        cfg_path = out_dir / "config.json"
        config = json.loads(cfg_path.read_text())
        config[section[0]] = section[1]
        cfg_path.write_text(json.dumps(config, indent=2) + "\n")
    return out_dir


def register_compressed(ref: str, name: str, build: Callable[[Path, Path], Any],
                        describe: Callable[[Any], dict[str, Any]], adapter_hint: str, command: str | None = None):
    """Compress the model `ref` names into a new registered version `name` (stage "compress", parent `ref`).

    `build(source_dir, out_dir)` writes the output and returns what it did; `describe(that)` gives the lineage's
    `config` and `data` (calibration refs) and the version's `tags` and `metrics`. An adapter is refused with
    `adapter_hint`. Returns (the new version, what `build` returned)."""
    registry = Registry()
    handle = registry.resolve(ref)
    if handle.kind == "adapter":
        raise LmsmithError(f"{handle.ref} is an adapter", adapter_hint)
    with tempfile.TemporaryDirectory(dir=registry.tmp) as tmp:
        out = Path(tmp) / name
        made = build(handle.dir, out)
        d = describe(made)
        mv = registry.register(out, name, lineage=Lineage(parent=handle.ref, stage="compress", command=command,
                                                          config=d["config"], data=d.get("data", [])),
                               tags=d.get("tags", {}), metrics=d.get("metrics", {}))
    return mv, made
