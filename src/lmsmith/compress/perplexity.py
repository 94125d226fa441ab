"""Perplexity on a text sample: the quality guard for compression (a quantized model must stay close)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.models import ResolvedModel, load_model, load_tokenizer, resolve_model
from lmsmith.quant.passes import quantize_model_


@dataclass
class Perplexity:
    ppl: float
    nll: float  # mean negative log-likelihood per predicted token (nats)
    tokens: int  # predicted tokens

    def to_dict(self) -> dict:
        return asdict(self)


def read_text(path: str | Path) -> str:
    p = Path(path)
    if not p.is_file():
        raise LmsmithError(f"text file not found: {p}", "pass --text FILE with plain UTF-8 text")
    text = p.read_text(encoding="utf-8", errors="replace").strip()
    if not text:
        raise LmsmithError(f"{p} is empty", "pass a file with at least a few sentences of text")
    return text


@torch.no_grad()
def perplexity(model: nn.Module, tokenizer, text: str, max_length: int = 1024, stride: int = 512) -> Perplexity:
    """Sliding-window perplexity (each token scored once, with up to `max_length` tokens of context)."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    if ids.numel() < 2:
        raise LmsmithError("the text is too short to measure perplexity", "use at least a few sentences")
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    max_length = min(max_length, limit) if limit else max_length
    stride = min(stride, max_length)
    device = next(model.parameters()).device
    total_nll, total_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + max_length, ids.numel())
        window = ids[begin:end].to(device)[None]
        new = end - prev_end  # tokens not scored by an earlier window
        logits = model(window).logits[0, :-1].float()
        targets = window[0, 1:]
        scored = slice(max(0, logits.shape[0] - new), logits.shape[0])
        nll = nn.functional.cross_entropy(logits[scored], targets[scored], reduction="sum")
        total_nll += nll.item()
        total_tokens += logits[scored].shape[0]
        prev_end = end
        if end == ids.numel():
            break
    mean = total_nll / total_tokens
    return Perplexity(ppl=math.exp(mean), nll=mean, tokens=total_tokens)


def ref_perplexity(ref: str | ResolvedModel, text: str, method: str | None = None, group_size: int | None = None,
                   symmetric: bool = False, include_lm_head: bool = False, dtype: str = "auto",
                   device: str | None = None, max_length: int = 1024) -> Perplexity:
    """Perplexity of a model ref, optionally quantized on the fly with `method` (None/"none": as stored)."""
    model_ref = resolve_model(ref)
    model = load_model(model_ref, dtype=dtype, device=device)
    if method not in (None, "none"):
        quantize_model_(model, method, group_size, symmetric, include_lm_head)
    return perplexity(model, load_tokenizer(model_ref), text, max_length=max_length)
