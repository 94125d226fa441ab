"""Wrapping a model for data-parallel training on PyTorch's own engine: activation checkpointing, compile,
FSDP2 or DDP, and getting the full weights back.

Order matters the way torchtitan does it: checkpointing, then compile, then sharding. None of the three
changes parameter names (activation checkpointing and compile act on the block in place), so a
checkpoint written with one setting loads under any other.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from typing import Any, Callable, Iterator, Literal

import torch
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.train.collectives import DistEnv

AC_MODES = ("none", "selective", "full")
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")


def decoder_blocks(model: nn.Module) -> nn.ModuleList:
    """The ModuleList of transformer blocks (HF `model.layers`, GPT-2 `h`, also under PEFT wrappers)."""
    no_split = set(getattr(inner_model(model), "_no_split_modules", None) or [])
    best: nn.ModuleList | None = None
    for name, m in model.named_modules():
        if isinstance(m, nn.ModuleList) and len(m) > 0:
            if no_split and type(m[0]).__name__ in no_split:
                return m
            if best is None and name.split(".")[-1] in ("layers", "h", "blocks"):
                best = m
    if best is None:
        raise LmsmithError(f"cannot find the decoder blocks of {type(model).__name__}",
                           "FSDP, activation checkpointing and compile need a model with a list of layers")
    return best


def inner_model(model: nn.Module) -> nn.Module:
    """The HF model under PEFT/DDP wrappers (for config and class attributes)."""
    m = model
    for attr in ("module", "base_model", "model"):
        while hasattr(m, attr) and isinstance(getattr(m, attr), nn.Module) and not hasattr(m, "_no_split_modules"):
            m = getattr(m, attr)
    return m


def clean_name(name: str) -> str:
    for p in WRAPPER_PREFIXES:
        name = name.replace(p, "")
    return name


# ------------------------------------------------------------------ activation checkpointing and compile
def _checkpointed(fn: Callable) -> Callable:
    from torch.utils.checkpoint import checkpoint

    def forward(*args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return fn(*args, **kwargs)
        return checkpoint(fn, *args, use_reentrant=False, **kwargs)
    forward._lmsmith_ac = True  # type: ignore[attr-defined]
    return forward


def apply_activation_checkpointing(model: nn.Module, mode: Literal["none", "selective", "full"]) -> int:
    """Recompute activations in backward instead of keeping them.

    full: every decoder block keeps only its input (memory ~ layers x tokens x hidden).
    selective: only each block's MLP is recomputed (its 3-4x wider intermediates are the largest
    activations; attention, the expensive part to recompute, is kept). Blocks without an `mlp`
    fall back to every other block. Returns the number of wrapped modules.

    The forward of each module is replaced in place, so parameter names do not change."""
    if mode not in AC_MODES:
        raise LmsmithError(f"unknown activation checkpointing mode '{mode}'", f"use one of: {', '.join(AC_MODES)}")
    if mode == "none":
        return 0
    blocks = decoder_blocks(model)
    targets: list[nn.Module] = []
    if mode == "full":
        targets = list(blocks)
    else:
        mlps = [getattr(b, "mlp", None) for b in blocks]
        targets = [m for m in mlps if isinstance(m, nn.Module)] or [b for i, b in enumerate(blocks) if i % 2 == 0]
    for m in targets:
        if not getattr(m.forward, "_lmsmith_ac", False):
            m.forward = _checkpointed(m.forward)  # type: ignore[method-assign]
    return len(targets)


COMPILE_MODE_ENV = "LMSMITH_COMPILE_MODE"  # a torch.compile mode for the blocks, for speed experiments (bench/train)


def compile_blocks(model: nn.Module, **compile_kwargs: Any) -> int:
    """torch.compile each decoder block in place: the blocks are identical, so one graph is compiled and
    reused, and compile time stays small compared to compiling the whole model. $LMSMITH_COMPILE_MODE (e.g.
    max-autotune-no-cudagraphs: Triton GEMM templates with fused epilogues tried against cuBLAS) sets the mode."""
    if os.environ.get(COMPILE_MODE_ENV) and "mode" not in compile_kwargs:
        compile_kwargs["mode"] = os.environ[COMPILE_MODE_ENV]
    blocks = decoder_blocks(model)
    for b in blocks:
        b.compile(**compile_kwargs)
    return len(blocks)


# ------------------------------------------------------------------ FSDP2 / DDP
def apply_fsdp(model: nn.Module, env: DistEnv, *, reshard_after_forward: bool = True,
               param_dtype: torch.dtype | None = None, reduce_dtype: torch.dtype | None = torch.float32) -> nn.Module:
    """FSDP2: shard each decoder block, then the root (embeddings, final norm, head).

    Parameters, gradients and optimizer states are sharded over the mesh (ZeRO-3). With
    `reshard_after_forward=False` the gathered block weights stay until backward (ZeRO-2-like: less
    communication, more memory). On CUDA the default mixed-precision policy computes in bf16 and
    reduces gradients in fp32; the sharded master weights and Adam states stay fp32."""
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if param_dtype is None and env.device.type == "cuda":
        param_dtype = torch.bfloat16
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype if param_dtype else None)
    blocks = decoder_blocks(model)
    for i, block in enumerate(blocks):
        # the last block is gathered again at once for backward: keeping it saves one all-gather
        fully_shard(block, mesh=env.mesh, mp_policy=mp,
                    reshard_after_forward=reshard_after_forward and i < len(blocks) - 1)
    fully_shard(model, mesh=env.mesh, mp_policy=mp, reshard_after_forward=reshard_after_forward)
    return model


def apply_ddp(model: nn.Module, env: DistEnv) -> nn.Module:
    """DDP for models whose weights + Adam states fit on every GPU: one gradient all-reduce per step."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=ids, gradient_as_bucket_view=True,
                                   find_unused_parameters=False)


def wrap_model(model: nn.Module, env: DistEnv, strategy: str, reshard_after_forward: bool = True) -> nn.Module:
    if strategy == "fsdp":
        if not env.enabled:
            raise LmsmithError("--fsdp needs a distributed launch", "add --nproc N (or start with torchrun)")
        return apply_fsdp(model, env, reshard_after_forward=reshard_after_forward)
    if strategy == "ddp":
        if not env.enabled:
            raise LmsmithError("--ddp needs a distributed launch", "add --nproc N (or start with torchrun)")
        return apply_ddp(model, env)
    return model


def unwrap(model: nn.Module) -> nn.Module:
    """The module under DDP (FSDP2 and compile act in place)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def clip_grad_norm(params: list[nn.Parameter], max_norm: float, optimizer: Any = None) -> torch.Tensor:
    """Clip and return the global gradient norm as a plain tensor (FSDP2 grads are DTensors).

    With a fused (CUDA) Adam/AdamW on plain tensors the clip is folded into the optimizer step: the norm is
    computed here and the optimizer's kernel divides each gradient by `grad_scale` as it reads it, which
    saves a read and a write of every gradient (the foreach scale pass of clip_grad_norm_)."""
    grads = [p.grad for p in params if p.grad is not None]
    if max_norm > 0 and _fused_adam(optimizer) and grads and not _is_dtensor(grads[0]):
        norm = total_norm(grads)
        optimizer.grad_scale = ((norm.float() + 1e-6) / max_norm).clamp(min=1.0)
        return norm
    if optimizer is not None and getattr(optimizer, "grad_scale", None) is not None:
        optimizer.grad_scale = None
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    full = getattr(norm, "full_tensor", None)
    return full() if callable(full) else norm


def total_norm(grads: list[torch.Tensor]) -> torch.Tensor:
    """The global L2 norm in fp32 (per-tensor norms of bf16 gradients would otherwise be rounded to bf16)."""
    if all(g.dtype == torch.float32 for g in grads):
        return torch.nn.utils.get_total_norm(grads, foreach=True)
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads, 2, dtype=torch.float32)))


def _fused_adam(optimizer: Any) -> bool:
    """An optimizer whose step divides each gradient by `optimizer.grad_scale` as it reads it."""
    if getattr(optimizer, "takes_grad_scale", False):
        return True
    return isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)) and bool(optimizer.defaults.get("fused"))


def _is_dtensor(t: torch.Tensor) -> bool:
    return callable(getattr(t, "full_tensor", None))


def full_state_dict(model: nn.Module, env: DistEnv, trainable_only: bool = False) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU, gathered on rank 0 (collective: call on every rank)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not env.enabled:
        m = unwrap(model)
        return {k: v.detach().cpu() for k, v in m.state_dict().items()}
    sd = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if trainable_only:
        keep = trainable_names(model)
        sd = {k: v for k, v in sd.items() if k in keep}
    return sd


def trainable_names(model: nn.Module) -> set[str]:
    return {clean_name(n) for n, p in model.named_parameters() if p.requires_grad}


@contextmanager
def maybe_no_sync(model: nn.Module, last: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulation."""
    ns = getattr(model, "no_sync", None)
    if last or ns is None:
        yield
    else:
        with ns():
            yield
