"""Data-parallel training on PyTorch's own engine: torchrun + NCCL/gloo + FSDP2 or DDP.

The loop is written once; this module gives it a small API so the same code runs on 1 process and on N:

    env = init_distributed(device)          # reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK; no-op when absent
    apply_activation_checkpointing(model, "full" | "selective" | "none")
    compile_blocks(model)                   # torch.compile per decoder block (small graphs, fast compiles)
    model = wrap_model(model, env, "fsdp")  # fully_shard per block then the root, or DDP
    loader = ShardedLoader(..., rank=env.rank, world=env.world)
    save_dcp / load_dcp                     # torch.distributed.checkpoint: resumes on a different world size

Order matters the way torchtitan does it: checkpointing, then compile, then sharding. None of the three
changes parameter names (activation checkpointing and compile act on the block in place), so a
checkpoint written with one setting loads under any other.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import random
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Sequence, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.train.data import Loader

T = TypeVar("T")
IGNORE_INDEX = -100
AC_MODES = ("none", "selective", "full")
# Set in every environment we build for workers: NVLink multicast (NVLS / symmetric memory) is not
# available on the lent machines and makes NCCL fail at init.
NCCL_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}
WRAPPER_PREFIXES = ("module.", "_orig_mod.", "_checkpoint_wrapped_module.", "_fsdp_wrapped_module.")


# ------------------------------------------------------------------ process group
@dataclass
class DistEnv:
    """Where this process sits. `world == 1` and `enabled == False` is the plain single-process case."""

    rank: int = 0
    local_rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")
    enabled: bool = False  # a process group is initialized (even with world == 1 under torchrun)
    mesh: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and "LOCAL_RANK" in os.environ


def init_distributed(device: str | torch.device = "auto", timeout_s: int = 1800) -> DistEnv:
    """Join the process group torchrun describes (env://); otherwise return the single-process env.

    Backend: NCCL on CUDA (one GPU per local rank), gloo on CPU. A 1-D device mesh over all ranks is
    what FSDP2 shards over."""
    dev = torch.device("cuda" if (str(device) == "auto" and torch.cuda.is_available()) else
                       ("cpu" if str(device) == "auto" else device))
    if not launched_by_torchrun():
        return DistEnv(device=dev)
    for k, v in NCCL_SAFE_ENV.items():
        os.environ.setdefault(k, v)
    rank, world, local = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    if dev.type == "cuda":
        if local >= torch.cuda.device_count():
            raise LmsmithError(f"local rank {local} has no GPU ({torch.cuda.device_count()} visible)",
                               "start at most one process per GPU (--nproc <= number of GPUs)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    if not dist.is_initialized():
        kw: dict[str, Any] = {"backend": backend, "timeout": _dt.timedelta(seconds=timeout_s)}
        if dev.type == "cuda":
            kw["device_id"] = dev
        dist.init_process_group(**kw)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(dev.type, (world,), mesh_dim_names=("dp",))
    if rank != 0:  # rank-0 logging: other ranks stay silent on the console
        from lmsmith.progress import console, out

        console.quiet = out.quiet = True
    return DistEnv(rank=rank, local_rank=local, world=world, device=dev, enabled=True, mesh=mesh)


def shutdown(env: DistEnv, wait_for_all: bool = True) -> None:
    """Tear the process group down. After a successful run every rank first waits for the others (rank 0
    saves and registers last): a rank that destroys the group and exits while a peer still talks to it
    can abort the peer inside gloo. After an error, no waiting: the peers may never arrive."""
    if env.enabled and dist.is_initialized():
        if wait_for_all:
            dist.barrier()
        dist.destroy_process_group()


def barrier(env: DistEnv) -> None:
    if env.enabled:
        dist.barrier()


def broadcast_object(env: DistEnv, obj: T) -> T:
    if not env.enabled or env.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def on_main(env: DistEnv, fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result (or its LmsmithError) to every rank, so a user error
    on rank 0 stops all ranks with the same message instead of leaving them waiting forever."""
    result: Any = None
    error: tuple[str, str | None] | None = None
    if env.is_main:
        try:
            result = fn()
        except LmsmithError as e:
            error = (e.message, e.hint)
    result, error = broadcast_object(env, (result, error))
    if error is not None:
        raise LmsmithError(error[0], error[1])
    return result


def main_first(env: DistEnv, fn: Callable[[], T]) -> T:
    """Rank 0 runs `fn` first (e.g. tokenizes into the shared on-disk cache), then the other ranks (cache
    hits). A user error on rank 0 is raised on every rank."""
    if not env.enabled or env.world == 1:
        return fn()
    result: Any = None
    error: tuple[str, str | None] | None = None
    if env.is_main:
        try:
            result = fn()
        except LmsmithError as e:
            error = (e.message, e.hint)
    error = broadcast_object(env, error)
    if error is not None:
        raise LmsmithError(error[0], error[1])
    return result if env.is_main else fn()


def all_reduce_sum(env: DistEnv, values: Sequence[float]) -> list[float]:
    """Sum a few numbers over ranks (one small collective; the loop calls it once per step)."""
    if not env.enabled or env.world == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64,
                     device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_tensor(env: DistEnv, t: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over ranks without a host sync (it stays on the device; NCCL runs on the stream)."""
    if not env.enabled or env.world == 1:
        return t
    t = t.clone()
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def log0(env: DistEnv, msg: str) -> None:
    if env.is_main:
        from lmsmith.progress import console

        console.print(msg)


# ------------------------------------------------------------------ model structure
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


def compile_blocks(model: nn.Module, **compile_kwargs: Any) -> int:
    """torch.compile each decoder block in place: the blocks are identical, so one graph is compiled and
    reused, and compile time stays small compared to compiling the whole model."""
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


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> torch.Tensor:
    """Clip and return the global gradient norm as a plain tensor (FSDP2 grads are DTensors)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    full = getattr(norm, "full_tensor", None)
    return full() if callable(full) else norm


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


# ------------------------------------------------------------------ sharded data
def shard_rows(ids: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's share of one global batch: every `world`-th row starting at `rank` (even sizes)."""
    return list(ids[rank::world])


def make_loader(dataset: Sequence[Any], batch_size: int, collate: Callable, seed: int, env: DistEnv) -> Loader:
    if not env.enabled or env.world == 1:
        return Loader(dataset, batch_size, collate, seed)
    return ShardedLoader(dataset, batch_size, collate, seed, rank=env.rank, world=env.world)


class ShardedLoader(Loader):
    """Each rank reads its own slice of the same global batch.

    All ranks walk the same seeded order; a step consumes `batch_size x world` rows (the global batch)
    and rank r takes rows r, r+world, ... of it. The position (epoch, row index) is global, so a
    checkpoint resumes on a different number of processes, and N processes with batch B see exactly
    the rows one process with batch N x B would, the short last batch of an epoch included: a rank
    left without a row gets a stand-in row whose labels are all ignored (no loss, no gradient), so
    every rank still joins the step's collectives."""

    def __init__(self, dataset: Sequence[Any], batch_size: int, collate: Callable, seed: int,
                 rank: int = 0, world: int = 1, shuffle: bool = True):
        super().__init__(dataset, batch_size, collate, seed, shuffle)
        self.rank, self.world = rank, world

    def batches_per_epoch(self) -> int:
        return max(1, -(-len(self.dataset) // (self.batch_size * self.world)))

    def next(self) -> dict[str, torch.Tensor]:
        if self.index >= len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._make_order()
        ids = self._order[self.index:self.index + self.batch_size * self.world]
        self.index += len(ids)
        mine = shard_rows(ids, self.rank, self.world)
        if mine:
            return self.collate([self.dataset[i] for i in mine])
        batch = self.collate([self.dataset[ids[0]]])
        if "labels" in batch:
            batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
        return batch


# ------------------------------------------------------------------ distributed checkpoints
DCP_MODEL, DCP_OPTIM = "model", "optim"


def is_dcp_checkpoint(path: Path) -> bool:
    return (path / DCP_MODEL / ".metadata").is_file()


def _state_options(full: bool = False):
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=full, cpu_offload=full, ignore_frozen_params=True)


def save_dcp(ckpt_root: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             train_state: dict[str, Any], env: DistEnv, keep: int = 2) -> Path:
    """Write `step-XXXXXXXX/` atomically with torch.distributed.checkpoint: each rank writes its shards
    into a temporary directory; rank 0 renames it into place after every rank is done.

    Sharded tensors are stored with their global shape, so `load_dcp` reshards them for any number
    of processes. Frozen weights (LoRA base) are not stored."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    final = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".tmp-step-{step:08d}-dcp"
    if env.is_main:
        ckpt_root.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
    barrier(env)
    model_sd = get_model_state_dict(model, options=_state_options())
    optim_sd = get_optimizer_state_dict(model, optimizer, options=_state_options())
    dcp.save(model_sd, checkpoint_id=str(tmp / DCP_MODEL))
    dcp.save(optim_sd, checkpoint_id=str(tmp / DCP_OPTIM))
    torch.save(_rng_state(), tmp / f"rng-rank{env.rank:05d}.pt")
    barrier(env)
    if env.is_main:
        from lmsmith.train.checkpoint import fsync_dir, list_checkpoints

        torch.save({"scheduler": scheduler.state_dict()}, tmp / "state.pt")
        (tmp / "train_state.json").write_text(json.dumps({**train_state, "step": step, "world": env.world,
                                                         "format": "dcp"}, indent=2))
        if final.exists():
            shutil.rmtree(final)
        os.rename(tmp, final)
        fsync_dir(ckpt_root)
        for old in list_checkpoints(ckpt_root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in ckpt_root.glob(".tmp-step-*"):  # left by a run killed mid-save
            shutil.rmtree(stale, ignore_errors=True)
    barrier(env)
    return final


def load_dcp(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
             env: DistEnv) -> dict[str, Any]:
    """Load a `save_dcp` checkpoint into this (possibly differently sharded) model and optimizer.

    Works with any world size, and without a process group (a plain single-process run)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import (get_model_state_dict, get_optimizer_state_dict,
                                                         set_model_state_dict, set_optimizer_state_dict)

    try:
        train_state = json.loads((path / "train_state.json").read_text())
        model_sd = get_model_state_dict(model, options=_state_options())
        dcp.load(model_sd, checkpoint_id=str(path / DCP_MODEL))
        set_model_state_dict(model, model_sd, options=_state_options())
        optim_sd = get_optimizer_state_dict(model, optimizer, options=_state_options())
        dcp.load(optim_sd, checkpoint_id=str(path / DCP_OPTIM))
        set_optimizer_state_dict(model, optimizer, optim_sd, options=_state_options())
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise LmsmithError(f"checkpoint {path} does not load: {str(e).splitlines()[0][:300]}",
                           "resume with the same model, LoRA and data options as the original run") from None
    scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng-rank{env.rank:05d}.pt"
    if rng_file.is_file() and int(train_state.get("world", 1)) == env.world:
        _set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    else:  # a different world size: no saved stream for this rank; derive one deterministically
        seed = int(train_state.get("step", 0)) * 7919 + env.rank
        torch.manual_seed(seed)
        random.seed(seed)
    return train_state


def _rng_state() -> dict[str, Any]:
    from lmsmith.train.checkpoint import rng_state

    return rng_state()


def _set_rng_state(state: dict[str, Any]) -> None:
    from lmsmith.train.checkpoint import set_rng_state

    set_rng_state(state)


@contextmanager
def maybe_no_sync(model: nn.Module, last: bool) -> Iterator[None]:
    """Skip DDP's gradient all-reduce on all but the last micro-batch of an accumulation."""
    ns = getattr(model, "no_sync", None)
    if last or ns is None:
        yield
    else:
        with ns():
            yield


# ------------------------------------------------------------------ one call for the loop
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
