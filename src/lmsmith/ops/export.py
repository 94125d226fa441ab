"""`lmsmith models export`: a directory other tools load as is.

Plain models are copied shard by shard (`Registry.export`). Our quantized format is not something
transformers can read, so quantized versions are written dequantized (plain safetensors in the dtype the
model was built in). An adapter either keeps its own bytes with `base_model_name_or_path` pointing at
the base's name instead of a registry path, or (`merge=True`) is folded into a full model.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import torch

from lmsmith.errors import LmsmithError
from lmsmith.models import is_quantized, load_model, parse_dtype
from lmsmith.registry.registry import INDEX_FILE, ModelVersion, Registry

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def _check_dest(dest: Path) -> None:
    if dest.exists() and not dest.is_dir():
        raise LmsmithError(f"export destination {dest} is a file", "give a new or empty directory")
    if dest.exists() and any(dest.iterdir()):
        raise LmsmithError(f"export directory {dest} is not empty", "choose a new or empty directory")


def _model_dtype(config: dict) -> torch.dtype:
    name = config.get("dtype") or config.get("torch_dtype") or "float32"
    return parse_dtype(name if name in ("float32", "bfloat16", "float16") else "float32")


def _save_full(model: torch.nn.Module, mv: ModelVersion, dest: Path, drop: tuple[str, ...] = ()) -> Path:
    """save_pretrained into a temp dir next to dest, plus the version's tokenizer and other non-weight files."""
    tmp = dest.with_name(dest.name + f".tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        for key in drop:
            if hasattr(model.config, key):
                delattr(model.config, key)
        model.save_pretrained(tmp, safe_serialization=True)
        for rel in mv.files:
            if rel in ("config.json", INDEX_FILE, "adapter_config.json") or rel.endswith(WEIGHT_SUFFIXES):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            if not (tmp / rel).exists():
                shutil.copyfile(mv.dir / rel, tmp / rel)
        for p in tmp.rglob("*"):
            if p.is_file():
                os.chmod(p, 0o644)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def dequantized(mv: ModelVersion) -> torch.nn.Module:
    """The quantized model with every quantized linear replaced by a plain nn.Linear of its dequantized weight."""
    from lmsmith.quant import QuantLinear

    config = json.loads((mv.dir / "config.json").read_text())
    dtype = _model_dtype(config)
    model = load_model(mv.ref, dtype=dtype, device="cpu")
    for name, mod in list(model.named_modules()):
        if isinstance(mod, QuantLinear):
            w = mod.dequantize(dtype)
            lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=mod.bias is not None, dtype=dtype)
            lin.weight.data.copy_(w)
            if mod.bias is not None:
                lin.bias.data.copy_(mod.bias.to(dtype))
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, lin)
    if getattr(model.config, "tie_word_embeddings", False):
        model.tie_weights()
    return model


def export_model(ref: str, dest: str | Path, merge: bool = False, registry: Registry | None = None) -> tuple[Path, str]:
    """Export `ref` to `dest`; returns (dest, what was written) for the one-line report."""
    registry = registry or Registry()
    dest = Path(dest).expanduser()
    _check_dest(dest)
    mv = registry.resolve(ref)
    if not isinstance(mv, ModelVersion):
        raise LmsmithError(f"{ref} is a directory, not a registered version", "export registry refs (NAME[@VERSION])")
    if mv.kind == "adapter":
        if merge:
            base = registry.resolve(mv.base or "", verify=False)
            dtype = _model_dtype(json.loads((base.dir / "config.json").read_text()))
            model = load_model(mv.ref, dtype=dtype, device="cpu", merge_adapter=True)
            return _save_full(model, mv, dest), f"{mv.base} with the adapter merged in"
        out = registry.export(mv.ref, dest)
        cfg_path = out / "adapter_config.json"
        cfg = json.loads(cfg_path.read_text())
        cfg["base_model_name_or_path"] = mv.base
        cfg_path.write_text(json.dumps(cfg, indent=2))
        return out, (f"an adapter on {mv.base}: load it on your export of the base "
                     f"(`lmsmith models export {mv.base} DIR`), or pass --merge for one standalone model")
    if is_quantized(mv.dir):
        if merge:
            raise LmsmithError("--merge is for adapters", f"{ref} is a full model")
        return _save_full(dequantized(mv), mv, dest, drop=("quantization",)), \
            "dequantized weights (transformers loads them; size as the unquantized model)"
    if merge:
        raise LmsmithError("--merge is for adapters", f"{ref} is a full model")
    return registry.export(mv.ref, dest), "safetensors shards"
