"""The quality guard of compression: perplexity of a model ref, optionally quantized on the fly (a quantized
model must stay close to its parent). The perplexity itself is `lmsmith.evaluate.perplexity`."""

from __future__ import annotations

from lmsmith.evaluate.perplexity import Perplexity, perplexity, read_text
from lmsmith.models import ResolvedModel, load_model, load_tokenizer, resolve_model
from lmsmith.quant.passes import quantize_model_

__all__ = ["Perplexity", "read_text", "ref_perplexity"]


def ref_perplexity(ref: str | ResolvedModel, text: str, method: str | None = None, group_size: int | None = None,
                   symmetric: bool = False, include_lm_head: bool = False, dtype: str = "auto",
                   device: str | None = None, max_length: int = 1024) -> Perplexity:
    """Perplexity of a model ref, optionally quantized on the fly with `method` (None/"none": as stored)."""
    model_ref = resolve_model(ref)
    model = load_model(model_ref, dtype=dtype, device=device)
    if method not in (None, "none"):
        quantize_model_(model, method, group_size, symmetric, include_lm_head)
    return perplexity(model, load_tokenizer(model_ref), text, max_length=max_length)
