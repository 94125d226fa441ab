"""Atomic checkpoints: everything needed to continue a run exactly.

A checkpoint is a directory `checkpoints/step-00000040/` with the trainable weights, optimizer and
scheduler state, RNG states and the data position. It is written into a temporary sibling directory
and renamed into place, so a crash (even SIGKILL) mid-save leaves the previous checkpoints intact and
never a half-written one under a `step-*` name. A save that fails (full disk) removes its temporary
directory and names the disk as the problem.

A run directory may be shared, so a checkpoint is data, never code: every file loads with
`torch.load(weights_only=True)` (tensors and plain containers) or is JSON / safetensors
(`state.json`: scheduler and Python RNG; `rng.safetensors`: torch RNG). `manifest.json` records each
file's sha256; on resume a checkpoint that fails it (or fails to load) is skipped for the newest one
that verifies.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
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
    py = state["python"]
    random.setstate((int(py[0]), tuple(int(x) for x in py[1]), py[2]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_rng(path: Path) -> None:
    """RNG states as safetensors: torch/CUDA generators as tensors, Python's as JSON metadata."""
    from safetensors.torch import save_file

    st = rng_state()
    tensors = {"torch": st["torch"], **{f"cuda.{i}": t for i, t in enumerate(st.get("cuda", []))}}
    save_file(tensors, path, metadata={"python": json.dumps(st["python"])})


def load_rng(path: Path) -> dict[str, Any]:
    from safetensors import safe_open

    with safe_open(path, framework="pt") as f:
        meta = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    cuda = [tensors[f"cuda.{i}"] for i in range(sum(1 for k in tensors if k.startswith("cuda.")))]
    return {"torch": tensors["torch"], "python": json.loads(meta["python"]), **({"cuda": cuda} if cuda else {})}


def write_json_state(path: Path, obj: dict[str, Any]) -> None:
    """Plain JSON (scheduler state is numbers and lists); anything else is a bug, not something to pickle."""
    try:
        path.write_text(json.dumps(obj, indent=1))
    except TypeError as e:
        raise LmsmithError(f"training state is not plain data, so it cannot be checkpointed safely: {e}") from None


def safe_load(path: Path) -> Any:
    """`torch.load` that never runs code: a pickle with anything but tensors and plain containers is refused."""
    return torch.load(path, map_location="cpu", weights_only=True)


_DCP_MODULES = ("torch.distributed.checkpoint.metadata", "torch.distributed.checkpoint.filesystem")


class _DcpMetadataUnpickler(pickle.Unpickler):
    """Only what torch.distributed.checkpoint writes into `.metadata`: its dataclasses, torch dtypes and
    sizes, paths. `dcp.load` reads that file with plain `pickle.load`, so it is checked first."""

    def find_class(self, module: str, name: str) -> Any:
        import importlib

        ok = False
        if module in _DCP_MODULES or (module == "pathlib" and name in ("PosixPath", "PurePosixPath", "WindowsPath")):
            ok = isinstance(getattr(importlib.import_module(module), name, None), (type, dict))
        elif module == "torch":
            ok = name == "Size" or isinstance(getattr(torch, name, None), torch.dtype)
        elif module == "torch.serialization":
            ok = name == "_get_layout"
        if not ok:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in checkpoint metadata")
        return super().find_class(module, name)


def check_dcp_metadata(path: Path) -> None:
    """Refuse a distributed checkpoint whose `.metadata` pickle references anything but DCP's own types."""
    for meta in sorted(path.rglob("*.metadata")):
        with open(meta, "rb") as f:
            _DcpMetadataUnpickler(f).load()


def load_state(path: Path, rng_name: str = "rng.safetensors") -> tuple[dict[str, Any], dict[str, Any] | None]:
    """(scheduler state, RNG state or None) of a checkpoint; old `state.pt` checkpoints only if they load
    with `weights_only=True`."""
    if (path / "state.json").is_file():
        state = json.loads((path / "state.json").read_text())
        rng = load_rng(path / rng_name) if (path / rng_name).is_file() else None
        return state["scheduler"], rng
    state = safe_load(path / "state.pt")  # written by an older lmsmith
    return state["scheduler"], state.get("rng")


def write_manifest(path: Path) -> None:
    """sha256 of every file of a checkpoint directory, so resume can tell a damaged checkpoint."""
    files = {p.relative_to(path).as_posix(): _sha256(p) for p in sorted(path.rglob("*"))
             if p.is_file() and p.name != "manifest.json"}
    (path / "manifest.json").write_text(json.dumps({"sha256": files}, indent=1))


def verify_checkpoint(path: Path) -> str | None:
    """None if the checkpoint is intact, else what is wrong with it (older ones without a manifest: trusted
    as far as their files are present and loading succeeds)."""
    try:
        json.loads((path / "train_state.json").read_text())
    except (OSError, ValueError) as e:
        return f"train_state.json unreadable ({e})"
    man = path / "manifest.json"
    if not man.is_file():
        return None
    try:
        files = json.loads(man.read_text())["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return "manifest.json unreadable"
    for rel, digest in files.items():
        p = path / rel
        if not p.is_file():
            return f"{rel} is missing"
        if _sha256(p) != digest:
            return f"{rel} is corrupted (sha256 mismatch)"
    return None


def _sha256(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def save_failed(ckpt_root: Path, tmp: Path, step: int, e: BaseException) -> LmsmithError:
    """Remove a half-written checkpoint and say why it failed (most often: the disk is full)."""
    shutil.rmtree(tmp, ignore_errors=True)
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return LmsmithError(f"the disk holding {ckpt_root} is full: checkpoint step {step} could not be written",
                            "free space (or lower --keep-checkpoints), then `lmsmith train resume` continues from "
                            "the last checkpoint")
    why = getattr(e, "strerror", None) or (str(e).splitlines()[0] if str(e) else type(e).__name__)
    return LmsmithError(f"checkpoint step {step} could not be written to {ckpt_root}: {why}",
                        "check the disk and its permissions; earlier checkpoints are intact")


def clean_stale(ckpt_root: Path, keep: Path | None = None) -> None:
    """Remove `.tmp-step-*` directories left by a save that crashed or failed."""
    if ckpt_root.is_dir():
        for stale in ckpt_root.glob(".tmp-step-*"):
            if stale != keep:
                shutil.rmtree(stale, ignore_errors=True)


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
    try:
        torch.save(trainable_state(model), tmp / "trainable.pt")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        if fault == "kill-during-save":  # test hook: die with a half-written checkpoint on disk
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "disk-full":  # test hook: the disk fills up mid-save
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        write_json_state(tmp / "state.json", {"scheduler": scheduler.state_dict()})
        save_rng(tmp / "rng.safetensors")
        (tmp / "train_state.json").write_text(json.dumps({**train_state, "step": step}, indent=2))
        write_manifest(tmp)
        for f in tmp.iterdir():
            with open(f, "rb") as fh:
                os.fsync(fh.fileno())
    except (OSError, RuntimeError) as e:  # torch.save reports a full disk as RuntimeError
        if isinstance(e, RuntimeError) and "write" not in str(e).lower():
            raise
        raise save_failed(ckpt_root, tmp, step, e) from None
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    fsync_dir(ckpt_root)
    for old in list_checkpoints(ckpt_root)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    clean_stale(ckpt_root, keep=tmp)
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
    """Restore weights, optimizer, scheduler and RNG; return the saved train state (step, data position).

    Nothing here unpickles code: a tampered file is refused, never run."""
    try:
        weights = safe_load(path / "trainable.pt")
        opt_state = safe_load(path / "optimizer.pt")
        sched_state, rng = load_state(path)
        train_state = json.loads((path / "train_state.json").read_text())
    except Exception as e:  # UnpicklingError (refused or truncated), EOFError, OSError, JSON, safetensors ...
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise LmsmithError(f"checkpoint {path} is unreadable or unsafe: {msg}") from None
    params = dict(model.named_parameters())
    missing = [n for n in weights if n not in params]
    if missing:
        raise LmsmithError(f"checkpoint {path} does not fit the model (e.g. {missing[0]})")
    with torch.no_grad():
        for n, t in weights.items():
            params[n].copy_(t.to(params[n].device))
    optimizer.load_state_dict(opt_state)
    scheduler.load_state_dict(sched_state)
    if rng is not None:
        set_rng_state(rng)
    return train_state


def resume_checkpoint(ckpt_root: Path, load: Any, say: Any = print) -> tuple[Path | None, dict[str, Any] | None]:
    """Load the newest checkpoint that verifies and loads (`load(path) -> train state`), saying which
    ones were skipped and why. (None, None) when there is none yet; an error when none is usable."""
    found = list_checkpoints(ckpt_root)
    problems = []
    for cand in reversed(found):
        problem = verify_checkpoint(cand)
        if problem is None:
            try:
                saved = load(cand)
            except LmsmithError as e:
                problem = e.message
            else:
                if problems:
                    say(f"resuming from {cand.name}, the newest checkpoint that verifies")
                return cand, saved
        problems.append(f"{cand.name}: {problem}")
        say(f"skipping checkpoint {cand.name}: {problem}")
    if problems:
        raise LmsmithError(f"no usable checkpoint in {ckpt_root}: {'; '.join(problems)}",
                           "restore a checkpoint from a backup, or start a new run")
    return None, None
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
    save_rng(tmp / f"rng-rank{env.rank:05d}.safetensors")  # tensors + JSON: resume never unpickles code
    barrier(env)
    if env.is_main:
        write_json_state(tmp / "state.json", {"scheduler": scheduler.state_dict()})
        (tmp / "train_state.json").write_text(json.dumps({**train_state, "step": step, "world": env.world,
                                                         "format": "dcp"}, indent=2))
        write_manifest(tmp)
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
        check_dcp_metadata(path)  # dcp.load unpickles .metadata: never let a tampered one run code
        model_sd = get_model_state_dict(model, options=dcp_options())
        dcp.load(model_sd, checkpoint_id=str(path / DCP_MODEL))
        set_model_state_dict(model, model_sd, options=dcp_options())
        optim_sd = get_optimizer_state_dict(model, optimizer, options=dcp_options())
        dcp.load(optim_sd, checkpoint_id=str(path / DCP_OPTIM))
        set_optimizer_state_dict(model, optimizer, optim_sd, options=dcp_options())
        sched_state, _ = load_state(path, rng_name="")
        rng_file = path / f"rng-rank{env.rank:05d}.safetensors"
        old_rng = path / f"rng-rank{env.rank:05d}.pt"  # older lmsmith: loaded only if it holds plain data
        rng = load_rng(rng_file) if rng_file.is_file() else safe_load(old_rng) if old_rng.is_file() else None
    except Exception as e:  # OSError, RuntimeError, UnpicklingError (refused: not plain data), EOFError, ...
        msg = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
        raise LmsmithError(f"checkpoint {path} does not load: {msg}",
                           "resume with the same model, LoRA and data options as the original run") from None
    scheduler.load_state_dict(sched_state)
    if rng is not None and int(train_state.get("world", 1)) == env.world:
        set_rng_state(rng)
    else:  # a different world size: no saved stream for this rank; derive one deterministically
        seed = int(train_state.get("step", 0)) * 7919 + env.rank
        torch.manual_seed(seed)
        random.seed(seed)
    return train_state
