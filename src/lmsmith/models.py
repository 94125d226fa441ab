"""Model references and loading, shared by every stage.

A ref is `NAME`, `NAME@VERSION`, `NAME@ALIAS` (registry) or a path to a HF model directory. Stages never
touch registry paths: they resolve a ref here and load what it names.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from lmsmith.errors import LmsmithError
from lmsmith.ops.registry import ModelVersion, PathModel, Registry

DTYPES = {
    "float32": torch.float32, "fp32": torch.float32,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
    "float16": torch.float16, "fp16": torch.float16,
}
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


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


def resolve(ref: str, registry: Registry | None = None, verify: bool = True) -> ModelVersion | PathModel:
    return (registry or Registry()).resolve(ref, verify=verify)


def has_tokenizer(path: Path) -> bool:
    return any((path / f).exists() for f in TOKENIZER_FILES)


def base_of(handle: ModelVersion | PathModel, registry: Registry) -> ModelVersion | PathModel:
    if handle.kind != "adapter":
        return handle
    if not handle.base:
        raise LmsmithError(f"adapter {handle.ref} does not record its base model")
    return registry.resolve(handle.base)


def tokenizer_dir(ref: str, registry: Registry | None = None) -> Path:
    """Directory holding the tokenizer of `ref` (an adapter without one uses its base's)."""
    registry = registry or Registry()
    h = registry.resolve(ref, verify=False)
    if has_tokenizer(h.dir):
        return h.dir
    if h.kind == "adapter":
        b = base_of(h, registry)
        if has_tokenizer(b.dir):
            return b.dir
    raise LmsmithError(f"model {h.ref} has no tokenizer", "import it with its tokenizer files, or pass --tokenizer REF")


def load_tokenizer(ref: str, registry: Registry | None = None):
    quiet_transformers()
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer_dir(ref, registry))
    if tok.pad_token_id is None and tok.eos_token_id is not None:
        tok.pad_token = tok.eos_token
    return tok


def is_quantized(path: Path) -> bool:
    """True for a directory written by `lmsmith compress quantize` (its config.json has our section)."""
    try:
        q = json.loads((path / "config.json").read_text()).get("quantization")
    except (OSError, ValueError):
        return False
    return isinstance(q, dict) and q.get("quant_method") == "lmsmith"


def read_config_text(path: Path) -> str:
    try:
        return (path / "config.json").read_text()
    except OSError:
        return ""


def load_model(ref: str, dtype: str | torch.dtype | None = "auto", device: str | None = None,
               registry: Registry | None = None, merge_adapter: bool = False, **kwargs: Any):
    """Load a causal LM (an adapter is applied to its base). Registry versions are hash-checked first."""
    quiet_transformers()
    from transformers import AutoModelForCausalLM

    registry = registry or Registry()
    device = device or default_device()
    torch_dtype = parse_dtype(dtype, device)
    h = registry.resolve(ref)
    try:
        if h.kind == "adapter":
            from peft import PeftModel

            base = base_of(h, registry)
            model = AutoModelForCausalLM.from_pretrained(base.dir, dtype=torch_dtype, **kwargs)
            model = PeftModel.from_pretrained(model, h.dir)
            if merge_adapter:
                model = model.merge_and_unload()
        elif is_quantized(h.dir):  # lmsmith-quantized weights (lmsmith.compress)
            from lmsmith.compress.storage import load_quantized

            return load_quantized(h.dir, torch_dtype, device)
        elif "lmsmith_lowrank" in read_config_text(h.dir):  # factorized linears (lmsmith.compress.lowrank)
            from lmsmith.compress.lowrank import load_lowrank

            return load_lowrank(h.dir, torch_dtype, device)
        else:
            model = AutoModelForCausalLM.from_pretrained(h.dir, dtype=torch_dtype, **kwargs)
    except (OSError, ValueError, KeyError) as e:
        raise LmsmithError(f"cannot load model {h.ref}: {str(e).splitlines()[0]}") from None
    return model.to(device).eval()


def read_config(ref: str, registry: Registry | None = None) -> dict[str, Any]:
    registry = registry or Registry()
    h = base_of(registry.resolve(ref, verify=False), registry)
    return json.loads((h.dir / "config.json").read_text())
