"""One training run's state: what `setup` built and where the loop stands (`Run`), and what it returns."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from lmsmith.train import distributed as D
from lmsmith.train.attention import DocumentMasks
from lmsmith.train.config import TrainConfig
from lmsmith.train.data import DataSpec, Loader, Prefetcher
from lmsmith.train.model import Built
from lmsmith.train.objectives import Objective

# Test hook (fault injection): "kill-after-step:N", "kill-during-save:N", "disk-full:N", "nan-at-step:N", "interrupt-after-step:N"
FAULT_ENV = "LMSMITH_TRAIN_FAULT"


def fault() -> tuple[str, int] | None:
    """The fault a test asked for through `LMSMITH_TRAIN_FAULT` (kind, step), if any."""
    spec = os.environ.get(FAULT_ENV)
    if not spec:
        return None
    kind, _, n = spec.partition(":")
    return kind, int(n)


@dataclass
class TrainResult:
    run_dir: Path
    run_id: str
    step: int
    metrics: dict[str, float] = field(default_factory=dict)
    output_dir: Path | None = None
    ref: str | None = None
    interrupted: bool = False


@dataclass
class Run:
    """Everything one run works with. Built once by `setup.setup`; `hooks.resume` moves `step` and `tokens`
    to a checkpoint's (and may rebalance `cfg` for another number of processes); the loop advances them."""

    cfg: TrainConfig
    env: D.DistEnv
    command: str | None
    run_dir: Path
    run_id: str
    strategy: str
    built: Built  # the (wrapped) model, its tokenizer, base ref and device
    data: DataSpec
    objective: Objective
    loader: Loader
    steps: int  # optimizer steps of the whole run
    optimizer: torch.optim.Optimizer
    scheduler: Any
    amp: Callable[[], Any]  # autocast (when training in bf16) + the SDPA backend, as a context factory
    amp_dtype: torch.dtype | None
    doc_masks: DocumentMasks | None  # pretraining without cross-document attention
    batches: Prefetcher | None = None  # the loader's batches, prepared ahead (made when the steps begin)
    start: int = 0  # the step this process began at (a checkpoint's on resume)
    step: int = 0
    tokens: int = 0  # trained tokens of all processes
    last_loss: float = math.nan
    eval_metrics: dict[str, float] = field(default_factory=dict)  # the objective's at the last evaluation
    interrupted: bool = False

    @property
    def model(self) -> torch.nn.Module:
        return self.built.model

    @property
    def device(self) -> torch.device:
        return self.built.device

    @property
    def ckpt_root(self) -> Path:
        return self.run_dir / "checkpoints"
