"""Resolve a model ref once into a `ResolvedModel`: which version, where its files are, what it is.

A ref is `NAME`, `NAME@VERSION`, `NAME@ALIAS` (registry) or a path to a HF model directory. A command
resolves each ref it is given once and passes the `ResolvedModel` down; loading weights, the tokenizer or
the config then reads from it and never asks the registry again. Registry versions are hash-checked at
most once per process (`Registry.check` caches by inode and mtime).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import torch

from lmsmith.errors import LmsmithError
from lmsmith.quant.format import quant_section
from lmsmith.quant.spec import QuantSpec
from lmsmith.registry import ModelVersion, PathModel, Registry
from lmsmith.runtime import parse_dtype, quiet_transformers

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")
Handle = ModelVersion | PathModel


def has_tokenizer(path: Path) -> bool:
    return any((path / f).exists() for f in TOKENIZER_FILES)


def is_quantized(path: Path) -> bool:
    """True for a directory written by `lmsmith compress quantize` (its config.json has our section)."""
    try:
        return quant_section(json.loads((path / "config.json").read_text())) is not None
    except (OSError, ValueError):
        return False


def base_of(handle: Handle, registry: Registry, verify: bool = True) -> Handle:
    """The model an adapter applies to (a full model is its own base)."""
    if handle.kind != "adapter":
        return handle
    if not handle.base:
        raise LmsmithError(f"adapter {handle.ref} does not record its base model")
    return registry.resolve(handle.base, verify=verify)


@dataclass(eq=False)
class ResolvedModel:
    """One model ref, resolved: the version (or directory) it names and, for an adapter, its base.

    `config`, `hf_config`, `quant`, `stored_dtype` and `tokenizer_dir` are read from disk on first use."""

    ref: str  # as given on the command line
    handle: Handle  # what the ref names (a registry version or a directory)
    registry: Registry = field(repr=False)
    verified: bool = False  # hash-checked (registry versions only)

    @cached_property
    def base(self) -> Handle:
        """Where the full weights and config are: the base of an adapter (resolved on first use), else `handle`."""
        return base_of(self.handle, self.registry, verify=False)

    @property
    def name(self) -> str:
        """The canonical ref (`NAME@V` or the path): what lineage records."""
        return self.handle.ref

    @property
    def dir(self) -> Path:
        return self.handle.dir

    @property
    def is_adapter(self) -> bool:
        return self.handle.kind == "adapter"

    @property
    def kind(self) -> str:
        return self.handle.kind

    def check(self) -> None:
        """Hash-check the registry files this model loads (once per process per version)."""
        if self.verified:
            return
        for h in (self.handle, self.base) if self.is_adapter else (self.handle,):
            if isinstance(h, ModelVersion):
                self.registry.check(h)
        self.verified = True

    @cached_property
    def config(self) -> dict[str, Any]:
        """The base's config.json as a dict."""
        try:
            return json.loads((self.base.dir / "config.json").read_text())
        except (OSError, ValueError) as e:
            raise LmsmithError(f"cannot read the config of {self.name}: {e}") from None

    @cached_property
    def hf_config(self):
        """The base's transformers `PretrainedConfig`."""
        quiet_transformers()
        from transformers import AutoConfig

        try:
            return AutoConfig.from_pretrained(self.base.dir)
        except (OSError, ValueError, KeyError) as e:
            raise LmsmithError(f"cannot read the config of {self.name}: {str(e).splitlines()[0]}") from None

    @cached_property
    def quant(self) -> QuantSpec | None:
        """The quantization spec when the weights were written by `lmsmith compress quantize`, else None."""
        section = quant_section(self.config) if (self.base.dir / "config.json").exists() else None
        return QuantSpec.from_dict(section) if section is not None else None

    @property
    def quantized(self) -> bool:
        return self.quant is not None

    @property
    def stored_dtype(self) -> torch.dtype:
        """The dtype the weights are stored in (config.json's `dtype`/`torch_dtype`; float32 if unknown)."""
        stored = self.config.get("dtype") or self.config.get("torch_dtype") or "float32"
        try:
            return parse_dtype(stored) if isinstance(stored, str) and stored != "auto" else torch.float32
        except LmsmithError:
            return torch.float32

    @cached_property
    def tokenizer_dir(self) -> Path:
        """Directory holding the tokenizer (an adapter without one uses its base's)."""
        if has_tokenizer(self.handle.dir):
            return self.handle.dir
        if self.is_adapter and has_tokenizer(self.base.dir):
            return self.base.dir
        raise LmsmithError(f"model {self.name} has no tokenizer",
                           "import it with its tokenizer files, or pass --tokenizer REF")


def resolve_model(ref: str | ResolvedModel, registry: Registry | None = None, verify: bool = True) -> ResolvedModel:
    """Resolve `ref` (and an adapter's base) once. An already resolved model is returned as it is.

    `verify=False` defers the hash check to the first weight load (`ResolvedModel.check`)."""
    if isinstance(ref, ResolvedModel):
        if verify:
            ref.check()
        return ref
    registry = registry or Registry()
    model = ResolvedModel(str(ref), registry.resolve(str(ref), verify=False), registry)
    if verify:
        model.check()
    return model
