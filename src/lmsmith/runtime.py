"""Torch and transformers settings every layer shares: dtype names, the default device, quiet logging.

Ground floor: the registry (importing pickled checkpoints) and the model layer both need these.
"""

from __future__ import annotations

import logging
import os
import warnings

import torch

from lmsmith.errors import LmsmithError

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}


def quiet_transformers() -> None:
    """Keep transformers' per-tensor progress bars and advisory warnings out of our output."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except Exception:  # pragma: no cover - logging is best effort
        pass
    logging.getLogger("transformers").setLevel(logging.ERROR)
    # deprecation notices aimed at library authors (e.g. PEFT calling is_gradient_checkpointing), not users
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"transformers\.")


def parse_dtype(name: str | torch.dtype | None, device: str | torch.device = "cpu") -> torch.dtype:
    """'auto' is float32 on CPU (fast and exact there) and bfloat16 on CUDA."""
    if isinstance(name, torch.dtype):
        return name
    if name in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise LmsmithError(f"unknown dtype '{name}'", f"use one of: auto, {', '.join(sorted(set(DTYPES)))}")
    return DTYPES[name]


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"
