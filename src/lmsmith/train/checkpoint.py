"""Atomic checkpoints: everything needed to continue a run exactly.

A checkpoint is a directory `checkpoints/step-00000040/` with the trainable weights, optimizer and
scheduler state, RNG states and the data position. It is written into a temporary sibling directory
and renamed into place, so a crash (even SIGKILL) mid-save leaves the previous checkpoints intact and
never a half-written one under a `step-*` name.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.train.collectives import DistEnv, barrier

STEP_RE = re.compile(r"^step-(\d{8})$")


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only what training changes: LoRA weights for an adapter, everything for full fine-tuning."""
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


def rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError:
        pass


def save_checkpoint(ckpt_root: Path, step: int, model: nn.Module, optimizer, scheduler,
                    train_state: dict[str, Any], keep: int = 2, fault: str | None = None) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step-{step:08d}"
    tmp = ckpt_root / f".tmp-step-{step:08d}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    torch.save(trainable_state(model), tmp / "trainable.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if fault == "kill-during-save":  # test hook: die with a half-written checkpoint on disk
        import signal

        os.kill(os.getpid(), signal.SIGKILL)
    torch.save({"scheduler": scheduler.state_dict(), "rng": rng_state()}, tmp / "state.pt")
    (tmp / "train_state.json").write_text(json.dumps({**train_state, "step": step}, indent=2))
    for f in tmp.iterdir():
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(ckpt_root)
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    for stale in ckpt_root.glob(".tmp-step-*"):
        if stale != tmp:
            shutil.rmtree(stale, ignore_errors=True)
    return final


def list_checkpoints(ckpt_root: Path) -> list[Path]:
    if not ckpt_root.is_dir():
        return []
    return sorted((p for p in ckpt_root.iterdir() if STEP_RE.match(p.name) and (p / "train_state.json").is_file()),
                  key=lambda p: p.name)


def latest_checkpoint(ckpt_root: Path) -> Path | None:
    found = list_checkpoints(ckpt_root)
    return found[-1] if found else None


def load_checkpoint(path: Path, model: nn.Module, optimizer, scheduler) -> dict[str, Any]:
    """Restore weights, optimizer, scheduler and RNG; return the saved train state (step, data position)."""
    try:
        weights = torch.load(path / "trainable.pt", map_location="cpu", weights_only=True)
        opt_state = torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True)
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
        train_state = json.loads((path / "train_state.json").read_text())
    except (OSError, RuntimeError, ValueError) as e:
        raise LmsmithError(f"checkpoint {path} is unreadable: {str(e).splitlines()[0]}") from None
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise LmsmithError(f"checkpoint {path} does not fit the model (e.g. {missing[0]})")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device))
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(state["scheduler"])
    set_rng_state(state["rng"])
    return train_state


# ------------------------------------------------------------------ sharded runs: torch.distributed.checkpoint
DCP_MODEL, DCP_OPTIM = "model", "optim"


def is_dcp_checkpoint(path: Path) -> bool:
    return (path / DCP_MODEL / ".metadata").is_file()


def dcp_options(full: bool = False):
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
    model_sd = get_model_state_dict(model, options=dcp_options())
    optim_sd = get_optimizer_state_dict(model, optimizer, options=dcp_options())
    dcp.save(model_sd, checkpoint_id=str(tmp / DCP_MODEL))
    dcp.save(optim_sd, checkpoint_id=str(tmp / DCP_OPTIM))
    torch.save(rng_state(), tmp / f"rng-rank{env.rank:05d}.pt")
    barrier(env)
    if env.is_main:
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
    from torch.distributed.checkpoint.state_dict import (
        get_model_state_dict,
        get_optimizer_state_dict,
        set_model_state_dict,
        set_optimizer_state_dict,
    )

    try:
        train_state = json.loads((path / "train_state.json").read_text())
        model_sd = get_model_state_dict(model, options=dcp_options())
        dcp.load(model_sd, checkpoint_id=str(path / DCP_MODEL))
        set_model_state_dict(model, model_sd, options=dcp_options())
        optim_sd = get_optimizer_state_dict(model, optimizer, options=dcp_options())
        dcp.load(optim_sd, checkpoint_id=str(path / DCP_OPTIM))
        set_optimizer_state_dict(model, optimizer, optim_sd, options=dcp_options())
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
    except (OSError, RuntimeError, ValueError, KeyError) as e:
        raise LmsmithError(f"checkpoint {path} does not load: {str(e).splitlines()[0][:300]}",
                           "resume with the same model, LoRA and data options as the original run") from None
    scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng-rank{env.rank:05d}.pt"
    if rng_file.is_file() and int(train_state.get("world", 1)) == env.world:
        set_rng_state(torch.load(rng_file, map_location="cpu", weights_only=False))
    else:  # a different world size: no saved stream for this rank; derive one deterministically
        seed = int(train_state.get("step", 0)) * 7919 + env.rank
        torch.manual_seed(seed)
        random.seed(seed)
    return train_state
