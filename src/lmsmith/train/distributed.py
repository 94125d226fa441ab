"""Data-parallel training on PyTorch's own engine: torchrun + NCCL/gloo + FSDP2 or DDP.

The loop is written once; this module is its one import for running on 1 process or on N:

    env = init_distributed(device)          # collectives.py: torchrun's RANK/WORLD_SIZE/LOCAL_RANK; no-op when absent
    model, head = prepare_model(model, env, strategy="fsdp", ac="full", compile=True)   # parallelize.py
    loader = make_loader(dataset, batch_size, collate, seed, env)                       # sharded_loader.py
    save_dcp / load_dcp                     # checkpoint.py: torch.distributed.checkpoint, any world size
"""

from __future__ import annotations

from typing import Any

from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.train.checkpoint import is_dcp_checkpoint, load_dcp, save_dcp
from lmsmith.train.collectives import (
    NCCL_SAFE_ENV,
    DistEnv,
    all_reduce_sum,
    all_reduce_tensor,
    barrier,
    broadcast_object,
    init_distributed,
    launched_by_torchrun,
    log0,
    main_first,
    on_main,
    shutdown,
)
from lmsmith.train.parallelize import (
    AC_MODES,
    apply_activation_checkpointing,
    apply_ddp,
    apply_fsdp,
    clip_grad_norm,
    compile_blocks,
    decoder_blocks,
    full_state_dict,
    inner_model,
    maybe_no_sync,
    unwrap,
    wrap_model,
)
from lmsmith.train.sharded_loader import ShardedLoader, make_loader, shard_rows

__all__ = ["NCCL_SAFE_ENV", "DistEnv", "NullTracker", "ShardedLoader", "all_reduce_sum", "all_reduce_tensor",
           "apply_activation_checkpointing", "apply_ddp", "apply_fsdp", "barrier", "broadcast_object",
           "check_options", "clip_grad_norm", "compile_blocks", "decoder_blocks", "full_state_dict", "init_distributed",
           "inner_model", "is_dcp_checkpoint", "launched_by_torchrun", "load_dcp", "log0", "main_first",
           "make_loader", "maybe_no_sync", "on_main", "parallel_strategy", "prepare_model", "rebalance", "save_dcp",
           "shard_rows", "shutdown", "unwrap", "wrap_model"]


def parallel_strategy(fsdp: bool, ddp: bool, env: DistEnv) -> str:
    """none (one process), fsdp (default with a process group) or ddp."""
    if fsdp and ddp:
        raise LmsmithError("--fsdp and --ddp exclude each other", "choose one")
    if not env.enabled:
        if fsdp or ddp:
            raise LmsmithError(f"--{'fsdp' if fsdp else 'ddp'} needs several processes",
                               "add --nproc N (or launch with torchrun)")
        return "none"
    return "ddp" if ddp else "fsdp"


def check_options(ac: str, hf_gradient_checkpointing: bool = False) -> None:
    """Contradictory speed options, caught before any compute."""
    if ac not in AC_MODES:
        raise LmsmithError(f"unknown activation checkpointing mode '{ac}'", f"use one of: {', '.join(AC_MODES)}")
    if ac != "none" and hf_gradient_checkpointing:
        raise LmsmithError("--ac and --gradient-checkpointing both recompute activations", "use only --ac")


def prepare_model(model: nn.Module, env: DistEnv, *, strategy: str = "none", ac: str = "none",
                  compile: bool = False, fused_loss: bool = False, reshard_after_forward: bool = True,
                  hf_gradient_checkpointing: bool = False) -> tuple[nn.Module, Any]:
    """Apply the speed and parallelism options in the right order; returns (model, fused head or None).

    fused head (before sharding, so its weight stays in the root FSDP group) -> activation
    checkpointing -> compile -> FSDP2/DDP."""
    check_options(ac, hf_gradient_checkpointing)
    head = None
    if fused_loss:
        from lmsmith.train.fused_loss import install_fused_head

        # with compile, the loss's per-chunk softmax/gradient is one compiled kernel too
        head = install_fused_head(model, compiled=compile and env.device.type == "cuda")
    apply_activation_checkpointing(model, ac)  # type: ignore[arg-type]
    if compile:
        compile_blocks(model)
    model = wrap_model(model, env, strategy, reshard_after_forward)
    return model, head


class NullTracker:
    """What ranks other than 0 log to: nothing."""

    def log_params(self, *a: Any, **k: Any) -> None: ...
    def log(self, *a: Any, **k: Any) -> None: ...
    def log_artifact(self, *a: Any, **k: Any) -> None: ...
    def flush(self) -> None: ...
    def close(self, *a: Any, **k: Any) -> None: ...


def rebalance(batch_size: int, grad_accum: int, saved_world: int, world: int) -> tuple[int, int]:
    """Per-rank micro-batch and accumulation steps that keep the global batch (rows per optimizer step)
    of a run resumed on a different number of processes: more accumulation on fewer ranks, smaller
    micro-batches on more. Raises when no integer split exists."""
    rows = batch_size * grad_accum * saved_world
    if world == saved_world:
        return batch_size, grad_accum
    if rows % (batch_size * world) == 0:
        return batch_size, rows // (batch_size * world)
    for accum in range(grad_accum, 0, -1):
        if rows % (accum * world) == 0:
            return rows // (accum * world), accum
    raise LmsmithError(f"the run's global batch of {rows} rows ({saved_world} processes x --batch-size {batch_size} "
                       f"x --grad-accum {grad_accum}) cannot be split over {world} processes",
                       f"resume on a number of processes that divides {rows}")
