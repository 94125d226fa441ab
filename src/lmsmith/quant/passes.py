"""Whole-model passes: swap a model's linears for quantized ones, pick backends, fuse, count bytes."""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.progress import task
from lmsmith.quant.dispatch import cpu_compute_dtype, fp8_cpu_error, fp8_supported
from lmsmith.quant.layers import (
    QUANT_CLASSES,
    Fp8Linear,
    Int4Linear,
    Int8Linear,
    QuantLinear,
)
from lmsmith.quant.spec import GROUP_SIZES, QuantSpec, check_group_size, check_method


def output_linear_names(model: nn.Module) -> set[str]:
    """Names of the linears that produce logits (lm_head), kept in full precision by default."""
    names = {n for n, m in model.named_modules() if n.split(".")[-1] in ("lm_head", "output", "embed_out")}
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    if out is not None:
        names |= {n for n, m in model.named_modules() if m is out}
    return names


def target_linears(model: nn.Module, include_lm_head: bool = False, skip: list[str] | tuple[str, ...] = ()
                   ) -> Iterator[tuple[str, nn.Linear]]:
    """The nn.Linear modules `quantize_model_` replaces, by qualified name."""
    heads = set() if include_lm_head else output_linear_names(model)
    for name, module in model.named_modules():
        if type(module) is nn.Linear and name not in heads and not any(s and s in name for s in skip):
            yield name, module


def auto_group_size(in_features: list[int]) -> int:
    """128 where it divides every layer (most Llama shapes: fast kernels, small scale overhead), else 32
    (finest: the best quality; SmolLM2's 576-wide layers, whose weights ship on a Q4_1 grid of 32)."""
    for g in (128, 32):
        if all(k % g == 0 for k in in_features):
            return g
    raise LmsmithError(f"no int4 group size in {GROUP_SIZES} divides every layer width {sorted(set(in_features))}",
                       "quantize this model with --method int8")


def plan(model: nn.Module, method: str, group_size: int | None = None, symmetric: bool = False,
         include_lm_head: bool = False, skip: list[str] | tuple[str, ...] = (), lm_head_method: str | None = None
         ) -> QuantSpec:
    """Validate the request against the model and fill in the spec (group size, module list)."""
    check_method(method)
    if lm_head_method is not None:
        check_method(lm_head_method)
        include_lm_head = True
    targets = list(target_linears(model, include_lm_head, skip))
    if not targets:
        raise LmsmithError("the model has no nn.Linear layers to quantize")
    heads = output_linear_names(model)
    spec = QuantSpec(method=method, symmetric=symmetric if method == "int4" else True,
                     include_lm_head=include_lm_head, skip=list(skip), modules=[n for n, _ in targets],
                     lm_head_method=lm_head_method if lm_head_method != method else None)
    int4_targets = [(n, m) for n, m in targets if spec.for_module(n, heads).method == "int4"]
    if int4_targets:
        if group_size is None:
            group_size = auto_group_size([m.in_features for _, m in int4_targets])
        check_group_size(group_size)
        bad = [(n, m.in_features) for n, m in int4_targets if m.in_features % group_size]
        if bad:
            name, k = bad[0]
            fits = [g for g in GROUP_SIZES if all(m.in_features % g == 0 for _, m in int4_targets)]
            raise LmsmithError(f"int4 group size {group_size} does not divide in_features={k} of {name}",
                               f"use --group-size {max(fits)}" if fits else "use --method int8 for this model")
        spec.group_size = group_size
    if "int4" not in (method, lm_head_method):
        spec.symmetric = True  # int8 and fp8 are always symmetric
    return spec


def make_module(linear: nn.Linear, spec: QuantSpec) -> QuantLinear:
    if spec.method == "int8":
        return Int8Linear.from_linear(linear)
    if spec.method == "int4":
        return Int4Linear.from_linear(linear, spec.group_size or 128, spec.symmetric)
    return Fp8Linear.from_linear(linear)


def empty_module(linear: nn.Linear, spec: QuantSpec, dtype: torch.dtype) -> QuantLinear:
    """A quantized linear of the right shapes with no values yet (to load a saved state into)."""
    args = (linear.in_features, linear.out_features, linear.bias is not None, dtype, linear.weight.device)
    if spec.method == "int4":
        return Int4Linear(*args, group_size=spec.group_size or 128, symmetric=spec.symmetric)
    return QUANT_CLASSES[spec.method](*args)


def model_device(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def quantize_model_(model: nn.Module, method: str, group_size: int | None = None, symmetric: bool = False,
                    include_lm_head: bool = False, skip: list[str] | tuple[str, ...] = (),
                    allow_cpu_fp8: bool = False, empty: bool = False, progress: bool = False,
                    lm_head_method: str | None = None) -> QuantSpec:
    """Replace the model's nn.Linear layers in place with quantized ones; returns the spec it applied.

    lm_head (and anything whose name contains a `skip` entry) stays in full precision unless
    `include_lm_head` (or `lm_head_method` names its own method: int8 logits beside int4 layers keep the
    quality while the biggest matrix of a small model still shrinks). `empty=True` only swaps in modules of
    the right shapes (loading a saved model). fp8 runs on CUDA only; `allow_cpu_fp8` lets an offline
    conversion quantize on the CPU anyway."""
    spec = plan(model, method, group_size, symmetric, include_lm_head, skip, lm_head_method)
    if "fp8" in (method, lm_head_method) and not allow_cpu_fp8 and not fp8_supported(model_device(model)):
        raise fp8_cpu_error()
    heads = output_linear_names(model)
    targets = [(n, m) for n, m in model.named_modules() if n in set(spec.modules)]
    if progress:
        ctx: Any = task(f"quantizing to {method}", total=len(targets))
    else:
        ctx = contextlib.nullcontext()
    with ctx as tick, torch.no_grad():
        for name, linear in targets:
            dtype = linear.weight.dtype
            mspec = spec.for_module(name, heads)
            new = empty_module(linear, mspec, dtype) if empty else make_module(linear, mspec)
            model.set_submodule(name, new)
            if tick is not None:
                tick(1, info=name)
    config = getattr(model, "config", None)
    if config is not None:
        config.quantization = spec.to_dict()
    model._lmsmith_quant = spec  # type: ignore[attr-defined]
    return spec


def quantized_modules(model: nn.Module) -> list[tuple[str, QuantLinear]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantLinear)]


def set_backend(model: nn.Module, backend: str) -> None:
    """'auto' (fused kernels where they apply) or 'reference' (dequantize then matmul)."""
    if backend not in ("auto", "reference"):
        raise LmsmithError(f"unknown backend '{backend}'", "use auto or reference")
    for _, m in quantized_modules(model):
        m.backend = backend


@torch.no_grad()
def prepare_for_inference(model: nn.Module, dtype: torch.dtype | None = None) -> None:
    """Build the kernels' weight layouts for activations of `dtype` now (not inside the first decode step
    or a CUDA graph capture). Default dtype: the model's floating parameters'."""
    if dtype is None:
        dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    for _, m in quantized_modules(model):
        device = m.qweight.device
        cdt = cpu_compute_dtype(dtype) if device.type == "cpu" else dtype
        if m.backend == "auto":
            m.prepare(device, cdt)


@torch.no_grad()
def concat_linears(linears: list[nn.Module]) -> nn.Module:
    """One linear computing `cat([l(x) for l in linears], -1)`: fused QKV / gate-up projections.

    Works for nn.Linear and for quantized linears of one method: every stored tensor is laid out per
    output channel (int8, fp8) or per output channel and input group (int4), so concatenating along the
    output dimension is exact. Engines fuse after `quantize_model_` with this instead of `torch.cat` on
    `.weight`."""
    first = linears[0]
    if any(type(m) is not type(first) for m in linears) or any(m.in_features != first.in_features for m in linears):
        raise LmsmithError("only linears of one type and input size can be concatenated")
    has_bias = [m.bias is not None for m in linears]
    if any(has_bias) and not all(has_bias):
        raise LmsmithError("cannot concatenate linears where only some have a bias")
    out = sum(m.out_features for m in linears)
    bias = torch.cat([m.bias for m in linears]) if all(has_bias) else None
    if type(first) is nn.Linear:
        fused = nn.Linear(first.in_features, out, bias=bias is not None, device=first.weight.device,
                          dtype=first.weight.dtype)
        fused.weight.copy_(torch.cat([m.weight for m in linears]))
    else:
        args = (first.in_features, out, bias is not None, first.scales.dtype, first.scales.device)
        if isinstance(first, Int4Linear):
            if any(m.group_size != first.group_size or m.symmetric != first.symmetric for m in linears):
                raise LmsmithError("cannot concatenate int4 linears with different group sizes or symmetry")
            fused = Int4Linear(*args, group_size=first.group_size, symmetric=first.symmetric)
        else:
            fused = type(first)(*args)
        fused.backend = first.backend
        for name, _ in fused.named_buffers(recurse=False):
            getattr(fused, name).copy_(torch.cat([getattr(m, name) for m in linears]))
    if bias is not None:
        fused.bias = nn.Parameter(bias.detach().clone(), requires_grad=False)  # keeps the parts' dtype
    return fused


def linear_weight_bytes(model: nn.Module) -> int:
    """Bytes of the linear layers' weights, quantized or not, without the output embedding (lm_head): what a
    weight-only quantization shrinks (reported by the quantization benchmarks)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    total = 0
    for m in model.modules():
        if isinstance(m, QuantLinear):
            total += m.weight_bytes
        elif type(m) is nn.Linear and m is not head:
            total += m.weight.numel() * m.weight.element_size()
    return total
