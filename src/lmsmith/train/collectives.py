"""Process group and collectives for torchrun jobs: one API that is a no-op on a single process.

    env = init_distributed(device)          # reads torchrun's RANK/WORLD_SIZE/LOCAL_RANK; no-op when absent
    on_main(env, fn) / main_first(env, fn)  # rank 0 does it (and tells the others), or goes first
    all_reduce_sum(env, [tokens, flag])     # summed over ranks
"""

from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

from lmsmith.errors import LmsmithError

T = TypeVar("T")
# Set in every environment we build for workers: NVLink multicast (NVLS / symmetric memory) is not
# available on the lent machines and makes NCCL fail at init.
NCCL_SAFE_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1"}


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
