"""Chunked linear + cross-entropy: the LM loss without ever materializing tokens x vocab fp32 logits.

With a 128k vocabulary, 16k tokens of logits are 8 GiB in fp32 (plus their gradient): often more than
all other activations. `fused_linear_cross_entropy(hidden, weight, labels)` computes the loss chunk by
chunk: logits for `chunk_size` tokens, their log-softmax, the loss, and right away the gradients with
respect to the hidden states and the head weight. Only one chunk of logits exists at any time; backward
just scales the stored gradients. Same loss and gradients as the plain path (fp32 softmax), same
`ignore_index` semantics.

`FusedLossHead` swaps a model's `lm_head` so the HF forward itself returns the summed loss (the labels
are set on the head before the call). Keeping the loss inside the model's forward keeps FSDP2's
gather/reshard hooks of the root module in charge of the head weight.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmsmith.errors import LmsmithError

IGNORE_INDEX = -100
DEFAULT_CHUNK = 1024  # eager: one fp32 chunk of logits (1024 x 128k = 0.5 GiB)
COMPILED_CHUNK = 4096  # compiled: bf16 logits + bf16 gradient of the chunk (4096 x 128k x 4 B = 2 GiB)


def _compute_dtype(x: torch.Tensor, w: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return torch.promote_types(x.dtype, w.dtype)


def _chunk_loss(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int):
    """Summed cross-entropy of one chunk, plus what its gradient needs: (loss, fp32 logits, lse, valid, safe)."""
    lf = logits.float()
    valid = labels != ignore_index
    safe = torch.where(valid, labels, 0)
    lse = torch.logsumexp(lf, dim=-1)
    loss = torch.where(valid, lse - lf.gather(1, safe[:, None]).squeeze(1), 0.0).sum()
    return loss, lf, lse, valid, safe


def _chunk_grad_inplace(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                        need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Summed loss of one chunk and d(loss)/d(logits), reusing one fp32 buffer (the eager path)."""
    loss, lf, lse, valid, safe = _chunk_loss(logits, labels, ignore_index)
    if not need_grad:
        return loss, None
    # d(loss)/d(logits) = softmax - onehot, zero on ignored rows
    g = lf.sub_(lse[:, None]).exp_()
    g[torch.arange(g.shape[0], device=g.device), safe] -= 1.0
    g.mul_(valid[:, None])
    return loss, g.to(logits.dtype)


def _chunk_grad_pure(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int,
                     need_grad: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The same math written for torch.compile: one reduction pass and one pointwise pass over the
    (bf16) logits, no fp32 copy of the chunk in memory."""
    loss, lf, lse, valid, safe = _chunk_loss(logits, labels, ignore_index)
    if not need_grad:
        return loss, None
    p = torch.exp(lf - lse[:, None])
    hit = torch.arange(lf.shape[1], device=lf.device)[None, :] == safe[:, None]
    g = torch.where(hit, p - 1.0, p) * valid[:, None]
    return loss, g.to(logits.dtype)


_compiled_chunk: Any = None
_mm_out_dtype_ok: bool | None = None  # does this torch/GPU have mm with an fp32 output of bf16 inputs?


def _chunk_fn(compiled: bool):
    """The compiled chunk kernel on CUDA (falls back to eager for good if compiling fails)."""
    global _compiled_chunk
    if not compiled:
        return _chunk_grad_inplace
    if _compiled_chunk is None:
        # full chunks share one static graph; a differing last chunk (or batch) triggers one dynamic recompile
        fn = torch.compile(_chunk_grad_pure)

        def guarded(*a: Any) -> Any:
            global _compiled_chunk
            try:
                return fn(*a)
            except Exception as e:  # no triton, an inductor bug: keep training on the eager path
                import warnings

                warnings.warn(f"compiled cross-entropy chunk failed ({type(e).__name__}); using eager", stacklevel=2)
                _compiled_chunk = _chunk_grad_inplace
                return _chunk_grad_inplace(*a)
        _compiled_chunk = guarded
    return _compiled_chunk


def _accumulate_weight_grad(grad_w: torch.Tensor, g: torch.Tensor, hc: torch.Tensor) -> None:
    """grad_w (fp32) += g.T @ hc. On CUDA a bf16 GEMM that accumulates into the fp32 buffer directly
    (cuBLAS with an fp32 C; without that, a bf16 product added in fp32); on CPU an fp32 GEMM."""
    global _mm_out_dtype_ok
    if g.is_cuda and g.dtype in (torch.bfloat16, torch.float16) and _mm_out_dtype_ok is not False:
        try:
            torch.addmm(grad_w, g.t(), hc.to(g.dtype), out_dtype=torch.float32, out=grad_w)
            _mm_out_dtype_ok = True
            return
        except (RuntimeError, TypeError):
            _mm_out_dtype_ok = False
    if g.is_cuda and g.dtype in (torch.bfloat16, torch.float16):
        grad_w.add_(g.t() @ hc.to(g.dtype))  # a half-precision product, summed in fp32
    else:
        grad_w.addmm_(g.t().float(), hc.float())


class _FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int,
                ignore_index: int, bias: torch.Tensor | None = None, compiled: bool = False) -> torch.Tensor:
        dt = _compute_dtype(hidden, weight)
        h2 = hidden.reshape(-1, hidden.shape[-1])
        y = labels.reshape(-1)
        w = weight.to(dt)
        b = bias.to(dt) if bias is not None else None
        need_h = ctx.needs_input_grad[0]
        need_w = ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[5]
        need_g = need_h or need_w or need_b
        chunk_fn = _chunk_fn(compiled)
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(h2) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        for s in range(0, h2.shape[0], chunk):
            hc = h2[s:s + chunk].to(dt)
            part, g = chunk_fn(F.linear(hc, w, b), y[s:s + chunk], ignore_index, need_g)
            loss += part
            if g is not None:
                if need_h:
                    grad_h[s:s + chunk] = (g @ w).to(h2.dtype)
                if need_w:
                    _accumulate_weight_grad(grad_w, g, hc)
                if need_b:
                    grad_b += g.float().sum(0)
        ctx.save_for_backward(grad_h, grad_w, grad_b)
        ctx.shape, ctx.w_dtype = hidden.shape, weight.dtype
        ctx.b_dtype = bias.dtype if bias is not None else None
        return loss

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, grad_out: torch.Tensor):
        # scaled in place: no second vocab x hidden buffer (this Function does not support double backward)
        grad_h, grad_w, grad_b = ctx.saved_tensors
        gh = grad_h.mul_(grad_out.to(grad_h.dtype)).view(ctx.shape) if grad_h is not None else None
        gw = grad_w.mul_(grad_out).to(ctx.w_dtype) if grad_w is not None else None
        gb = grad_b.mul_(grad_out).to(ctx.b_dtype) if grad_b is not None else None
        return gh, gw, None, None, None, gb, None


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                               bias: torch.Tensor | None = None, chunk_size: int = DEFAULT_CHUNK,
                               ignore_index: int = IGNORE_INDEX, reduction: str = "sum",
                               compiled: bool = False) -> torch.Tensor:
    """Cross-entropy of `hidden @ weight.T (+ bias)` against `labels`, computed `chunk_size` tokens at a time.

    hidden: (..., H); weight: (V, H); labels: (...) with `ignore_index` for positions without a target.
    reduction: "sum" (what the loop's objectives return) or "mean" over non-ignored tokens.
    compiled: run each chunk's softmax/gradient through one torch.compile'd kernel (CUDA)."""
    if reduction not in ("sum", "mean"):
        raise LmsmithError(f"unknown reduction '{reduction}'", "use sum or mean")
    if hidden.shape[:-1] != labels.shape:
        raise LmsmithError(f"hidden states {tuple(hidden.shape)} and labels {tuple(labels.shape)} do not match")
    loss = _FusedLinearCE.apply(hidden, weight, labels, max(1, int(chunk_size)), ignore_index, bias, compiled)
    if reduction == "mean":
        loss = loss / (labels != ignore_index).sum().clamp(min=1)
    return loss


class FusedLossHead(nn.Module):
    """Stands in for `lm_head`: returns the summed next-token loss of the labels set by `set_labels`
    instead of logits. Holds the very same weight Parameter (tied embeddings stay tied)."""

    def __init__(self, head: nn.Linear, chunk_size: int = DEFAULT_CHUNK, compiled: bool = False):
        super().__init__()
        self.compiled = compiled
        self.weight = head.weight
        self.bias = head.bias if getattr(head, "bias", None) is not None else None
        self.original = [head]  # a list: not registered as a submodule (no duplicate parameters)
        self.chunk_size = chunk_size
        self.labels: torch.Tensor | None = None

    def set_labels(self, labels: torch.Tensor) -> None:
        """`labels` as the batch has them (unshifted); position t is scored against labels[t + 1]."""
        shifted = torch.full_like(labels, IGNORE_INDEX)
        shifted[:, :-1] = labels[:, 1:]
        self.labels = shifted

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.labels is None:
            raise RuntimeError("FusedLossHead called without labels; use the fused objective")
        labels, self.labels = self.labels, None
        if labels.shape != hidden.shape[:-1]:
            raise RuntimeError(f"labels {tuple(labels.shape)} do not match hidden states {tuple(hidden.shape)}")
        return fused_linear_cross_entropy(hidden, self.weight, labels, bias=self.bias, chunk_size=self.chunk_size,
                                          compiled=self.compiled)


def _find_head(model: nn.Module) -> tuple[nn.Module, str, nn.Module]:
    get = getattr(model, "get_output_embeddings", None)
    head = get() if callable(get) else None
    if head is None:
        raise LmsmithError(f"{type(model).__name__} has no output head", "drop --fused-loss")
    for name, m in model.named_modules():
        if m is head:
            parent_name, _, attr = name.rpartition(".")
            return model.get_submodule(parent_name) if parent_name else model, attr, head
    raise LmsmithError("cannot locate the output head module", "drop --fused-loss")


def install_fused_head(model: nn.Module, chunk_size: int | None = None, compiled: bool = False) -> FusedLossHead:
    """Replace the model's lm_head by a FusedLossHead (call before FSDP wrapping).

    compiled: the per-chunk softmax/gradient runs as one compiled kernel over bf16 logits (no fp32 chunk
    copy), which also allows the larger default chunk (COMPILED_CHUNK tokens: fewer, bigger GEMMs)."""
    chunk_size = chunk_size or (COMPILED_CHUNK if compiled else DEFAULT_CHUNK)
    cfg = getattr(model, "config", None)
    if getattr(cfg, "final_logit_softcapping", None):
        raise LmsmithError(f"--fused-loss does not support logit soft-capping ({type(model).__name__})",
                           "drop --fused-loss for this architecture")
    if getattr(cfg, "logit_scale", None) not in (None, 1, 1.0):
        raise LmsmithError("--fused-loss does not support scaled logits", "drop --fused-loss")
    parent, attr, head = _find_head(model)
    if isinstance(head, FusedLossHead):
        return head
    if not isinstance(head, nn.Linear):
        raise LmsmithError(f"the output head is a {type(head).__name__}, not a Linear layer", "drop --fused-loss")
    fused = FusedLossHead(head, chunk_size, compiled)
    setattr(parent, attr, fused)
    return fused


def remove_fused_head(model: nn.Module) -> None:
    """Put the original lm_head back (before saving the model)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, FusedLossHead):
            parent_name, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent_name) if parent_name else model, attr, m.original[0])


def fused_head(model: nn.Module) -> FusedLossHead | None:
    return next((m for m in model.modules() if isinstance(m, FusedLossHead)), None)


class FusedCausalLMLoss:
    """The loop's causal-LM objective with the chunked head: same `count`, same summed loss."""

    name = "causal_lm_fused"

    def __init__(self, head: FusedLossHead):
        self.head = head

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        from lmsmith.train.objectives import MODEL_INPUTS

        self.head.set_labels(batch["labels"])
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        return model(**inputs, use_cache=False).logits  # the head returned the summed loss
