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
DEFAULT_CHUNK = 1024


def _compute_dtype(x: torch.Tensor, w: torch.Tensor) -> torch.dtype:
    if torch.is_autocast_enabled(x.device.type):
        return torch.get_autocast_dtype(x.device.type)
    return torch.promote_types(x.dtype, w.dtype)


class _FusedLinearCE(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, chunk: int,
                ignore_index: int, bias: torch.Tensor | None = None) -> torch.Tensor:
        dt = _compute_dtype(hidden, weight)
        h2 = hidden.reshape(-1, hidden.shape[-1])
        y = labels.reshape(-1)
        w = weight.to(dt)
        b = bias.to(dt) if bias is not None else None
        need_h = ctx.needs_input_grad[0]
        need_w = ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[5]
        loss = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(h2) if need_h else None
        grad_w = torch.zeros_like(weight, dtype=torch.float32) if need_w else None
        grad_b = torch.zeros_like(bias, dtype=torch.float32) if need_b else None
        for s in range(0, h2.shape[0], chunk):
            hc = h2[s:s + chunk].to(dt)
            yc = y[s:s + chunk]
            logits = F.linear(hc, w, b).float()
            valid = yc != ignore_index
            safe = torch.where(valid, yc, 0)
            lse = torch.logsumexp(logits, dim=-1)
            target = logits.gather(1, safe[:, None]).squeeze(1)
            loss += torch.where(valid, lse - target, 0.0).sum()
            if need_h or need_w or need_b:
                # d(loss)/d(logits) = softmax - onehot, zero on ignored rows; reuse the logits buffer
                g = logits.sub_(lse[:, None]).exp_()
                g[torch.arange(g.shape[0], device=g.device), safe] -= 1.0
                g.mul_(valid[:, None])
                gd = g.to(dt)
                if need_h:
                    grad_h[s:s + chunk] = (gd @ w).to(h2.dtype)
                if need_w:
                    grad_w.addmm_(g.t(), hc.float())
                if need_b:
                    grad_b += g.sum(0)
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
        return gh, gw, None, None, None, gb


def fused_linear_cross_entropy(hidden: torch.Tensor, weight: torch.Tensor, labels: torch.Tensor, *,
                               bias: torch.Tensor | None = None, chunk_size: int = DEFAULT_CHUNK,
                               ignore_index: int = IGNORE_INDEX, reduction: str = "sum") -> torch.Tensor:
    """Cross-entropy of `hidden @ weight.T (+ bias)` against `labels`, computed `chunk_size` tokens at a time.

    hidden: (..., H); weight: (V, H); labels: (...) with `ignore_index` for positions without a target.
    reduction: "sum" (what the loop's objectives return) or "mean" over non-ignored tokens."""
    if reduction not in ("sum", "mean"):
        raise LmsmithError(f"unknown reduction '{reduction}'", "use sum or mean")
    if hidden.shape[:-1] != labels.shape:
        raise LmsmithError(f"hidden states {tuple(hidden.shape)} and labels {tuple(labels.shape)} do not match")
    loss = _FusedLinearCE.apply(hidden, weight, labels, max(1, int(chunk_size)), ignore_index, bias)
    if reduction == "mean":
        loss = loss / (labels != ignore_index).sum().clamp(min=1)
    return loss


class FusedLossHead(nn.Module):
    """Stands in for `lm_head`: returns the summed next-token loss of the labels set by `set_labels`
    instead of logits. Holds the very same weight Parameter (tied embeddings stay tied)."""

    def __init__(self, head: nn.Linear, chunk_size: int = DEFAULT_CHUNK):
        super().__init__()
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
        return fused_linear_cross_entropy(hidden, self.weight, labels, bias=self.bias, chunk_size=self.chunk_size)


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


def install_fused_head(model: nn.Module, chunk_size: int = DEFAULT_CHUNK) -> FusedLossHead:
    """Replace the model's lm_head by a FusedLossHead (call before FSDP wrapping)."""
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
    fused = FusedLossHead(head, chunk_size)
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
