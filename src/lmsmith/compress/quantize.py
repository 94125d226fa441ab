"""`lmsmith compress quantize`: quantize a model (a ref or a directory) and register the result with lineage.

The format it writes (and every stage reads) is `lmsmith.quant.format`; the math and modules are
`lmsmith.quant`.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.models import ResolvedModel, load_model, resolve_model
from lmsmith.quant.format import quant_section, save_quantized
from lmsmith.quant.passes import quantize_model_
from lmsmith.quant.spec import QuantSpec
from lmsmith.registry import Lineage
from lmsmith.runtime import parse_dtype


def quantize_to_dir(source_dir: Path, out_dir: Path, method: str, group_size: int | None = None,
                    symmetric: bool = False, include_lm_head: bool = False, skip: tuple[str, ...] = (),
                    lm_head_method: str | None = None) -> tuple[QuantSpec, nn.Module]:
    """Quantize the HF model in `source_dir` (weights read in float32) into `out_dir`."""
    config = json.loads((source_dir / "config.json").read_text())
    if quant_section(config):
        raise LmsmithError(f"{source_dir} is already quantized ({quant_section(config)['method']})",
                           "quantize the unquantized parent model instead")
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    save_dtype = parse_dtype(stored) if isinstance(stored, str) and stored != "auto" else torch.float32
    qat = config.get("lmsmith_qat") if isinstance(config.get("lmsmith_qat"), dict) else {}
    if qat.get("method") == method == "int4" and group_size is None:
        group_size = qat.get("group_size")  # a QAT model converts on the grid it trained on
    model = load_model(str(source_dir), dtype=torch.float32, device="cpu")
    spec = quantize_model_(model, method, group_size, symmetric, include_lm_head, skip, allow_cpu_fp8=True,
                           progress=True, lm_head_method=lm_head_method)
    if qat.get("method") == method and (method == "int8" or qat.get("group_size") == spec.group_size) and not symmetric:
        spec.algorithm = "qat"  # the weights already lie on this grid: rounding them changes nothing
    save_quantized(model, source_dir, out_dir, spec, dtype=save_dtype)
    return spec, model


def register_quantized(ref: str | ResolvedModel, name: str, method: str, group_size: int | None = None, symmetric: bool = False,
                       include_lm_head: bool = False, command: str | None = None, metrics: dict[str, Any] | None = None,
                       lm_head_method: str | None = None):
    """Quantize a registered (or path) model and register the result with lineage (stage "compress")."""
    model = resolve_model(ref)
    registry, handle = model.registry, model.handle
    if handle.kind == "adapter":
        raise LmsmithError(f"{handle.ref} is an adapter", "merge it first (`lmsmith train merge`) and quantize the merged model")
    with tempfile.TemporaryDirectory(dir=registry.tmp) as tmp:
        out = Path(tmp) / name
        spec, _ = quantize_to_dir(handle.dir, out, method, group_size, symmetric, include_lm_head,
                                  lm_head_method=lm_head_method)
        config = {k: v for k, v in spec.to_dict().items() if k != "modules"}
        config["num_quantized_modules"] = len(spec.modules)
        mv = registry.register(out, name, lineage=Lineage(parent=handle.ref, stage="compress", command=command,
                                                          config=config),
                               tags={"quantization": method}, metrics=metrics or {})
    return mv, spec
