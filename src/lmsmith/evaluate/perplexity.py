"""Perplexity, one implementation for every stage: sliding windows over a token sequence scored by any
logits function (a transformers model, the serving engine). `compress` uses it as its quality guard; `serve`
scores through its engine; perplexity tasks report `metrics.perplexity_metrics` of a backend's log-likelihoods.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from lmsmith.errors import LmsmithError

LogitsFn = Callable[[torch.Tensor], torch.Tensor]  # token ids [T] -> float logits [T, vocab]


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
def windowed_perplexity(ids: Sequence[int] | torch.Tensor, logits: LogitsFn, max_length: int = 1024,
                        stride: int | None = None) -> Perplexity:
    """Perplexity of `ids` in windows of up to `max_length` tokens starting every `stride` tokens.

    Each token is scored once, with the context its window gives it: `stride < max_length` slides (more context
    per token, more compute); `stride = max_length` (the default) scores independent chunks."""
    ids = torch.as_tensor(ids, dtype=torch.long)
    if ids.numel() < 2:
        raise LmsmithError("the text is too short to measure perplexity", "use at least a few sentences")
    stride = min(stride or max_length, max_length)
    total_nll, total_tokens, prev_end = 0.0, 0, 0
    for begin in range(0, ids.numel(), stride):
        end = min(begin + max_length, ids.numel())
        window = ids[begin:end]
        new = end - prev_end  # tokens not scored by an earlier window
        out = logits(window)[:-1].float()
        targets = window[1:].to(out.device)
        scored = slice(max(0, out.shape[0] - new), out.shape[0])
        total_nll += nn.functional.cross_entropy(out[scored], targets[scored], reduction="sum").item()
        total_tokens += out[scored].shape[0]
        prev_end = end
        if end == ids.numel():
            break
    if total_tokens == 0:
        raise LmsmithError("the text is too short to measure perplexity", "use at least a few sentences")
    mean = total_nll / total_tokens
    return Perplexity(ppl=math.exp(mean), nll=mean, tokens=total_tokens)


def model_logits(model: nn.Module) -> LogitsFn:
    """A transformers causal LM as a logits function (one forward per window)."""
    device = next(model.parameters()).device
    return lambda window: model(window.to(device)[None]).logits[0]


def perplexity(model: nn.Module, tokenizer, text: str, max_length: int = 1024, stride: int = 512) -> Perplexity:
    """Sliding-window perplexity of `text` under a transformers model (windows capped at its context)."""
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False).input_ids[0]
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    max_length = min(max_length, limit) if limit else max_length
    return windowed_perplexity(ids, model_logits(model), max_length, min(stride, max_length))
