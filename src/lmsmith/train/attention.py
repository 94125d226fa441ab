"""Attention for packed training rows and the choice of SDPA kernel.

Packed rows with `--no-cross-doc-attention` carry per-token document ids. On CUDA they become a
flex-attention `BlockMask` (causal and within-document): the compiled flex kernel skips every block
that crosses a document boundary, so no dense T x T mask is built and no padding is needed. Elsewhere
(CPU) they become the dense additive 4-D mask that SDPA/eager attention understand: slower, but exact
and dependency-free. Both give the same logits as running each document alone.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable, ContextManager, Literal

import torch
from torch import nn

from lmsmith.data.packing import block_causal_mask
from lmsmith.errors import LmsmithError

DocMaskMode = Literal["flex", "dense"]
SDPA_BACKENDS = ("auto", "flash", "cudnn", "efficient", "math")


def collate_docs(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack packed rows and keep `doc_ids` as they are: the mask is built on the device by `DocumentMasks`."""
    return {k: torch.stack([r[k] for r in rows]) for k in rows[0]}


def doc_mask_mode(device: torch.device) -> DocMaskMode:
    """flex on CUDA (when this torch has flex attention), dense elsewhere."""
    if device.type != "cuda":
        return "dense"
    try:
        from torch.nn.attention.flex_attention import create_block_mask  # noqa: F401
    except ImportError:
        return "dense"
    return "flex"


def use_flex_attention(model: nn.Module) -> None:
    """Switch the HF model (under PEFT/DDP wrappers) to its flex-attention implementation."""
    from lmsmith.train.distributed import _inner

    inner = _inner(model)
    setter = getattr(inner, "set_attn_implementation", None)
    try:
        if callable(setter):
            setter("flex_attention")
        else:
            inner.config._attn_implementation = "flex_attention"
    except (ValueError, ImportError) as e:
        raise LmsmithError(f"{type(inner).__name__} does not support flex attention: {str(e).splitlines()[0]}",
                           "train with cross-document attention (drop --no-cross-doc-attention)") from None


def flex_document_mask(doc_ids: torch.Tensor) -> Any:
    """BlockMask over (batch, query, key): causal and inside one document."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, t = doc_ids.shape

    def mask_mod(bi, h, q, kv):  # noqa: ANN001 (flex's index tensors)
        return (doc_ids[bi, q] == doc_ids[bi, kv]) & (q >= kv)

    return create_block_mask(mask_mod, b, None, t, t, device=doc_ids.device)


class DocumentMasks:
    """Turns a batch's `doc_ids` (already on the device) into the attention mask the model expects."""

    def __init__(self, mode: DocMaskMode, dense_dtype: torch.dtype = torch.float32):
        self.mode, self.dense_dtype = mode, dense_dtype

    def __call__(self, batch: dict[str, torch.Tensor]) -> dict[str, Any]:
        if "doc_ids" not in batch:
            return batch
        batch = dict(batch)
        doc = batch.pop("doc_ids")
        batch["attention_mask"] = (flex_document_mask(doc) if self.mode == "flex"
                                   else block_causal_mask(doc, self.dense_dtype))
        return batch


def resolve_sdpa_backend(name: str, device: torch.device) -> str:
    """'auto' stays torch's own choice; the others are checked against the device."""
    if name not in SDPA_BACKENDS:
        raise LmsmithError(f"unknown --sdpa-backend '{name}'", f"use one of: {', '.join(SDPA_BACKENDS)}")
    if name != "auto" and name != "math" and device.type != "cuda":
        raise LmsmithError(f"--sdpa-backend {name} needs a CUDA GPU", "use --sdpa-backend auto on CPU")
    return name


def sdpa_context(name: str) -> Callable[[], ContextManager[Any]]:
    """A factory of contexts that make scaled_dot_product_attention prefer one kernel (also while compiling);
    the others stay allowed, in torch's order, for inputs the preferred one cannot take."""
    if name == "auto":
        return nullcontext
    from torch.nn.attention import SDPBackend, sdpa_kernel

    order = [SDPBackend.FLASH_ATTENTION, SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
    first = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
             "efficient": SDPBackend.EFFICIENT_ATTENTION, "math": SDPBackend.MATH}[name]
    backends = [first] + [b for b in order if b != first]
    return lambda: sdpa_kernel(backends, set_priority=True)
