"""`lmsmith train ... --nproc N`: re-run the same command under torchrun, one process per GPU.

On one machine: `torchrun --standalone --nproc-per-node N -m lmsmith.train.launch <the same arguments>`.
On several machines, start the same line on each node yourself with a shared rendezvous:

    torchrun --nnodes 2 --node-rank 0 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 \\
        --rdzv-id myrun -m lmsmith.train.launch train pretrain ...     # on node 0
    torchrun --nnodes 2 --node-rank 1 ... (same)                          # on node 1

`python -m lmsmith.train.launch ARGS` is the same as `lmsmith ARGS` (and `python -m lmsmith ARGS`).
"""

from __future__ import annotations

import os
import subprocess
import sys

from lmsmith.errors import LmsmithError
from lmsmith.train.collectives import NCCL_SAFE_ENV, launched_by_torchrun


def torchrun_command(nproc: int, argv: list[str], *, nnodes: int = 1, node_rank: int = 0,
                     rdzv_endpoint: str | None = None, rdzv_id: str = "lmsmith") -> list[str]:
    """The torchrun line that runs `lmsmith <argv>` on `nproc` processes (standalone, or one node of many)."""
    cmd = [sys.executable, "-m", "torch.distributed.run"]
    if nnodes == 1 and rdzv_endpoint is None:
        cmd += ["--standalone"]
    else:
        cmd += ["--nnodes", str(nnodes), "--node-rank", str(node_rank), "--rdzv-backend", "c10d",
                "--rdzv-endpoint", rdzv_endpoint or "localhost:29500", "--rdzv-id", rdzv_id]
    return cmd + ["--nproc-per-node", str(nproc), "-m", "lmsmith.train.launch", *argv]


def worker_env(nproc: int = 1, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for torchrun's workers: NCCL without NVLink multicast, CPU threads split evenly."""
    env = dict(os.environ if base is None else base)
    for k, v in NCCL_SAFE_ENV.items():
        env.setdefault(k, v)
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // max(1, nproc))))
    return env


def strip_nproc(argv: list[str]) -> list[str]:
    """The workers get the command without `--nproc N` (torchrun would also mistake it for its own flag)."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == "--nproc":
            skip = True
        elif not a.startswith("--nproc="):
            out.append(a)
    return out


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run `lmsmith <argv>` under torchrun with `nproc` local processes; return its exit status."""
    import torch

    if torch.cuda.is_available() and nproc > torch.cuda.device_count():
        raise LmsmithError(f"--nproc {nproc} but only {torch.cuda.device_count()} GPU(s) are visible",
                           f"use --nproc {torch.cuda.device_count()} or fewer")
    env = worker_env(nproc)
    try:
        return subprocess.run(torchrun_command(nproc, strip_nproc(argv)), env=env).returncode
    except KeyboardInterrupt:
        return 130


def needs_relaunch(nproc: int | None) -> bool:
    return bool(nproc) and not launched_by_torchrun()


if __name__ == "__main__":
    import runpy

    # the same as `python -m lmsmith ARGS`: the command line stays the entry point's, and no stage imports it
    runpy.run_module("lmsmith", run_name="__main__", alter_sys=True)
