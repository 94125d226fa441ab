"""Calibrated post-training quantization: GPTQ, AWQ or round-to-nearest on a chosen grid (4/3/2-bit in
int4 storage, or int8), written as our ordinary quantized model directory and registered with lineage.

The decoder is walked layer by layer on the user's calibration text (`calibration.layerwise`); each
layer's linears get their integer values from the chosen algorithm; at the end every target linear is
swapped for the same `Int4Linear`/`Int8Linear` that `compress quantize --algorithm rtn` writes, so
`generate`, `serve` and `eval` load the result unchanged.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmsmith.compress.awq import awq_layer
from lmsmith.compress.calibration import (
    CalibrationSpec,
    InputStats,
    calibration_ids,
    decoder_layers,
    layerwise,
    linears_of,
)
from lmsmith.compress.gptq import gptq_quantize
from lmsmith.compress.grid import Grid, to_module, weight_of
from lmsmith.errors import LmsmithError
from lmsmith.quant.passes import QuantSpec, make_module, output_linear_names, plan

ALGORITHMS = ("rtn", "gptq", "awq")


@dataclass
class PTQConfig:
    method: str = "int4"
    algorithm: str = "gptq"
    bits: int | None = None  # int4: 4 (default), 3 or 2
    group_size: int | None = None
    symmetric: bool = False
    act_order: bool = True
    damp: float = 0.01
    include_lm_head: bool = False
    lm_head_method: str | None = None
    calibration: str | None = None
    samples: int = 128
    seq_len: int = 512
    seed: int = 0
    batch_size: int = 4

    def grid(self, symmetric: bool) -> Grid:
        bits = 8 if self.method == "int8" else (self.bits or 4)
        return Grid(self.method, bits, symmetric)

    def check(self) -> None:
        if self.algorithm not in ALGORITHMS:
            raise LmsmithError(f"unknown algorithm '{self.algorithm}'", f"use one of: {', '.join(ALGORITHMS)}")
        if self.method not in ("int4", "int8"):
            raise LmsmithError(f"--algorithm {self.algorithm} writes int4 or int8, not {self.method}",
                               "use --method int4 or int8 (fp8 is round-to-nearest only)")
        if self.algorithm != "rtn" and not self.calibration:
            raise LmsmithError(f"--algorithm {self.algorithm} needs calibration text",
                               "pass --calibration FILE (plain text or JSONL in the model's language)")
        self.grid(self.symmetric)  # validates bits


def qualified_names(model: nn.Module) -> dict[int, str]:
    return {id(m): n for n, m in model.named_modules()}


@torch.no_grad()
def calibrated_quantize_(model: nn.Module, tokenizer, cfg: PTQConfig) -> QuantSpec:
    """Quantize `model` in place with cfg.algorithm; returns the spec (stored as config.json's section)."""
    cfg.check()
    spec = plan(model, cfg.method, cfg.group_size, cfg.symmetric, cfg.include_lm_head, (), cfg.lm_head_method)
    grid = cfg.grid(spec.symmetric)
    group = spec.group_size if cfg.method == "int4" else None
    targets = set(spec.modules)
    results: dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}
    if cfg.algorithm != "rtn":
        assert cfg.calibration is not None
        ids = calibration_ids(tokenizer, CalibrationSpec(cfg.calibration, cfg.samples, cfg.seq_len, cfg.seed))
        names = qualified_names(model)

        def process(i: int, layer: nn.Module, forward) -> None:
            prefix = names[id(layer)]
            lins = {n: m for n, m in linears_of(layer).items() if f"{prefix}.{n}" in targets}
            if cfg.algorithm == "gptq":
                with InputStats(lins, hessian=True) as st:
                    forward()
                for grp in st.groups(list(lins)):
                    w = torch.cat([lins[n].weight.float() for n in grp])
                    q, s, z = gptq_quantize(w, st.hessian(grp[0]), grid, group, cfg.act_order, cfg.damp)
                    row = 0
                    for n in grp:
                        rows = slice(row, row + lins[n].out_features)
                        row = rows.stop
                        results[f"{prefix}.{n}"] = (q[rows], s[rows], z[rows])
                        # later layers calibrate on this layer's quantized outputs
                        lins[n].weight.copy_(weight_of(q[rows], s[rows], z[rows]).to(lins[n].weight.dtype))
            else:  # awq: scales folded and ranges clipped in full precision; rounded below
                with InputStats(lins, keep_inputs=True) as st:
                    forward()
                awq_layer(layer, {n: st.input_matrix(n) for n in lins}, grid, group)

        layerwise(model, ids, process, f"{cfg.algorithm} {cfg.method} ({grid.bits}-bit)", cfg.batch_size)
        del ids
    heads = output_linear_names(model)
    for name in spec.modules:
        linear = model.get_submodule(name)
        mspec = spec.for_module(name, heads)
        if mspec.method != cfg.method:  # an lm_head with its own method: round-to-nearest
            new = make_module(linear, mspec)
        else:
            q, s, z = results[name] if name in results else grid.rtn(linear.weight.detach(), group)
            new = to_module(linear, grid, q, s, z, group)
        model.set_submodule(name, new)
    spec.algorithm = cfg.algorithm
    spec.bits = grid.bits if cfg.method == "int4" and grid.bits != 4 else None
    config = getattr(model, "config", None)
    if config is not None:
        config.quantization = spec.to_dict()
    model._lmsmith_quant = spec  # type: ignore[attr-defined]
    return spec


def calibrated_quantize_to_dir(source_dir: Path, out_dir: Path, cfg: PTQConfig) -> tuple[QuantSpec, nn.Module]:
    from lmsmith.models import load_model, load_tokenizer, parse_dtype
    from lmsmith.quant.format import quant_section, save_quantized

    config = json.loads((source_dir / "config.json").read_text())
    if quant_section(config):
        raise LmsmithError(f"{source_dir} is already quantized ({quant_section(config)['method']})",
                           "quantize the unquantized parent model instead")
    stored = config.get("dtype") or config.get("torch_dtype") or "float32"
    save_dtype = parse_dtype(stored) if isinstance(stored, str) and stored != "auto" else torch.float32
    model = load_model(str(source_dir), dtype=torch.float32, device="cpu")
    decoder_layers(model)  # a clear error for models without decoder layers, before calibration
    spec = calibrated_quantize_(model, load_tokenizer(str(source_dir)), cfg)
    save_quantized(model, source_dir, out_dir, spec, dtype=save_dtype)
    return spec, model


def register_calibrated(ref: str, name: str, cfg: PTQConfig, command: str | None = None,
                        metrics: dict[str, Any] | None = None):
    """Quantize a registered (or path) model with calibration and register it (stage "compress")."""
    from lmsmith.compress.dense import register_compressed
    from lmsmith.registry.registry import DataRef

    def describe(spec: QuantSpec) -> dict[str, Any]:
        config = {k: v for k, v in spec.to_dict().items() if k != "modules"}
        config.update(num_quantized_modules=len(spec.modules), **{k: v for k, v in asdict(cfg).items()
                                                                 if k not in config and k != "calibration"})
        data = [calibration_ref(cfg.calibration)] if cfg.calibration else []
        return {"config": config, "data": [DataRef(**d) for d in data], "metrics": metrics or {},
                "tags": {"quantization": cfg.method, "algorithm": cfg.algorithm}}

    cfg.check()
    return register_compressed(ref, name, lambda src, out: calibrated_quantize_to_dir(src, out, cfg)[0], describe,
                               "merge it first (`lmsmith train merge`) and quantize the merged model", command)


def calibration_ref(path: str) -> dict[str, Any]:
    """The calibration file as a lineage data reference (path and content hash)."""
    import hashlib

    p = Path(path)
    return {"path": str(p.resolve()), "sha256": hashlib.sha256(p.read_bytes()).hexdigest()}
