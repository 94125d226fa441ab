"""The model layer, shared by every stage: resolve a ref once, load its weights and tokenizer.

    resolved.py  `resolve_model(ref) -> ResolvedModel` (paths, config, dtype, base/adapter, quantization spec)
    loading.py   `load_model`, `load_tokenizer`

A ref is `NAME`, `NAME@VERSION`, `NAME@ALIAS` (registry) or a path to a HF model directory. Stages never
touch registry paths: they resolve a ref here and load what it names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lmsmith.models.loading import load_model, load_tokenizer
from lmsmith.models.resolved import TOKENIZER_FILES, ResolvedModel, base_of, has_tokenizer, is_quantized, resolve_model
from lmsmith.registry import ModelVersion, PathModel, Registry
from lmsmith.runtime import DTYPES, default_device, parse_dtype, quiet_transformers


def resolve(ref: str, registry: Registry | None = None, verify: bool = True) -> ModelVersion | PathModel:
    """The registry version (or directory) `ref` names; `resolve_model` gives the full `ResolvedModel`."""
    return (registry or Registry()).resolve(ref, verify=verify)


def tokenizer_dir(ref: str | ResolvedModel, registry: Registry | None = None) -> Path:
    """Directory holding the tokenizer of `ref` (an adapter without one uses its base's)."""
    return resolve_model(ref, registry, verify=False).tokenizer_dir


def read_config(ref: str | ResolvedModel, registry: Registry | None = None) -> dict[str, Any]:
    """config.json of `ref` (of its base, for an adapter)."""
    return resolve_model(ref, registry, verify=False).config


__all__ = ["DTYPES", "TOKENIZER_FILES", "ResolvedModel", "base_of", "default_device", "has_tokenizer", "is_quantized",
           "load_model", "load_tokenizer", "parse_dtype", "quiet_transformers", "read_config", "resolve",
           "resolve_model", "tokenizer_dir"]
