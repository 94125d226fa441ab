"""Attention for training: sync-free causal attention, packed rows, and the choice of SDPA kernel.

`causal` (the default on CUDA for Llama-family models) is scaled_dot_product_attention with `is_causal=True`
and no mask at all. transformers builds no mask for an attention implementation it has no mask function for,
and so skips the checks that read the GPU from the host once per forward (`find_packed_sequence_indices` and
the all-ones padding test both end in `.all()`). Training batches are right-padded (or not padded), so causal
attention gives every real token exactly what the padding mask would; padded positions carry no loss.

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
import torch.nn.functional as F
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


CAUSAL_ATTENTION = "lmsmith_causal"
# architectures whose attention is plain causal softmax attention (no sliding window, soft-capping or sinks)
CAUSAL_SAFE = {"llama", "mistral", "qwen2", "qwen3"}


def causal_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                     attention_mask: Any, scaling: float | None = None, dropout: float = 0.0,
                     **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: q [B, H, T, D], k/v [B, KV, S, D] -> out [B, T, H, D]."""
    if attention_mask is not None:  # a prepared 4-D mask (document masks): transformers' own kernels
        from torch.nn.attention.flex_attention import BlockMask
        from transformers.integrations.flex_attention import flex_attention_forward
        from transformers.integrations.sdpa_attention import sdpa_attention_forward

        fn = flex_attention_forward if isinstance(attention_mask, BlockMask) else sdpa_attention_forward
        return fn(module, query, key, value, attention_mask, scaling=scaling, dropout=dropout, **kwargs)
    t, s = query.shape[-2], key.shape[-2]
    if t != s:
        raise LmsmithError("the training attention does not run with a KV cache",
                           "call model.set_attn_implementation('sdpa') before generating with this model")
    out = F.scaled_dot_product_attention(query, key, value, is_causal=t > 1, scale=scaling,
                                         dropout_p=dropout if module.training else 0.0,
                                         enable_gqa=key.shape[1] != query.shape[1])
    return out.transpose(1, 2).contiguous(), None


def _register_causal() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(CAUSAL_ATTENTION, causal_attention)


def causal_attention_supported(config: Any) -> bool:
    """Plain causal attention reproduces this model's attention (no sliding window within reach, no soft-cap)."""
    if getattr(config, "model_type", None) not in CAUSAL_SAFE:
        return False
    window = getattr(config, "sliding_window", None)
    if window is not None and (getattr(config, "use_sliding_window", True) or config.model_type == "mistral"):
        if window < getattr(config, "max_position_embeddings", 0):
            return False
    return getattr(config, "attn_logit_softcapping", None) is None


def use_causal_attention(model: nn.Module) -> bool:
    """Switch a supported HF model (under PEFT/DDP wrappers) to `causal_attention`; False when left as is."""
    from lmsmith.train.parallelize import inner_model

    inner = inner_model(model)
    cfg = getattr(inner, "config", None)
    if cfg is None or not causal_attention_supported(cfg) or cfg._attn_implementation not in (None, "sdpa"):
        return False
    _register_causal()
    setter = getattr(inner, "set_attn_implementation", None)
    try:
        if callable(setter):
            setter(CAUSAL_ATTENTION)
        else:
            cfg._attn_implementation = CAUSAL_ATTENTION
    except (ValueError, ImportError, KeyError):
        return False
    return cfg._attn_implementation == CAUSAL_ATTENTION


def use_flex_attention(model: nn.Module) -> None:
    """Switch the HF model (under PEFT/DDP wrappers) to its flex-attention implementation."""
    from lmsmith.train.parallelize import inner_model

    inner = inner_model(model)
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
