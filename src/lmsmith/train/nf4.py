"""4-bit NormalFloat (NF4) frozen linear layers in plain PyTorch, for QLoRA without bitsandbytes.

NF4 (Dettmers et al., 2023) stores each weight as one of 16 levels placed at quantiles of a normal
distribution, scaled per block of 64 weights by the block's absolute maximum. Two codes share a byte,
so a weight costs 4 bits + 32/64 bits of scale (~4.5 bits). The layer dequantizes on the fly (on CPU
or CUDA) and recomputes the dequantized weight in backward instead of keeping it, so the frozen base
stays at ~0.56 bytes per parameter during training.
"""

from __future__ import annotations

import torch
from torch import nn

NF4_LEVELS = torch.tensor([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941,
    0.7229568362236023, 1.0,
])
BLOCK = 64


def quantize_nf4(w: torch.Tensor, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (packed uint8 codes, per-block absmax fp32) for `w` (any shape; numel padded to the block)."""
    flat = w.detach().float().reshape(-1)
    pad = (-flat.numel()) % block
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    blocks = flat.view(-1, block)
    absmax = blocks.abs().amax(dim=1).clamp_min(1e-12)
    normed = blocks / absmax[:, None]
    levels = NF4_LEVELS.to(flat.device)
    mids = (levels[1:] + levels[:-1]) / 2
    codes = torch.bucketize(normed.reshape(-1), mids).to(torch.uint8)  # nearest level
    packed = (codes[0::2] << 4) | codes[1::2]
    return packed, absmax


def dequantize_nf4(packed: torch.Tensor, absmax: torch.Tensor, shape: torch.Size | tuple[int, ...],
                   dtype: torch.dtype = torch.float32, block: int = BLOCK) -> torch.Tensor:
    codes = torch.stack([packed >> 4, packed & 0x0F], dim=1).reshape(-1).long()
    levels = NF4_LEVELS.to(device=packed.device, dtype=torch.float32)
    vals = (levels[codes].view(-1, block) * absmax[:, None]).reshape(-1)
    n = 1
    for s in shape:
        n *= s
    return vals[:n].view(*shape).to(dtype)


class _NF4Matmul(torch.autograd.Function):
    """y = x W^T with W dequantized in forward and again in backward (never stored)."""

    @staticmethod
    def forward(ctx, x, packed, absmax, out_features, in_features):  # type: ignore[override]
        w = dequantize_nf4(packed, absmax, (out_features, in_features), x.dtype)
        ctx.save_for_backward(packed, absmax)
        ctx.shape = (out_features, in_features)
        return x @ w.t()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        packed, absmax = ctx.saved_tensors
        w = dequantize_nf4(packed, absmax, ctx.shape, grad.dtype)
        return grad @ w, None, None, None, None


class NF4Linear(nn.Linear):
    """A frozen nn.Linear whose weight lives in NF4. Subclasses nn.Linear so PEFT's LoRA wraps it."""

    def __init__(self, in_features: int, out_features: int, packed: torch.Tensor, absmax: torch.Tensor,
                 bias: torch.Tensor | None, compute_dtype: torch.dtype = torch.float32):
        nn.Module.__init__(self)
        self.in_features, self.out_features = in_features, out_features
        self.register_buffer("qweight", packed)
        self.register_buffer("absmax", absmax)
        self.bias = nn.Parameter(bias.detach().to(compute_dtype), requires_grad=False) if bias is not None else None
        self.compute_dtype = compute_dtype

    @classmethod
    def from_linear(cls, lin: nn.Linear, compute_dtype: torch.dtype | None = None) -> "NF4Linear":
        packed, absmax = quantize_nf4(lin.weight)
        return cls(lin.in_features, lin.out_features, packed, absmax, lin.bias, compute_dtype or lin.weight.dtype)

    @property
    def weight(self) -> torch.Tensor:  # type: ignore[override]
        """The dequantized weight (what PEFT and merges read); computed, not stored."""
        return dequantize_nf4(self.qweight, self.absmax, (self.out_features, self.in_features), self.compute_dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.compute_dtype) if not torch.is_autocast_enabled() else x
        y = _NF4Matmul.apply(x, self.qweight, self.absmax, self.out_features, self.in_features)
        return y + self.bias.to(y.dtype) if self.bias is not None else y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nf4, block={BLOCK}"


def quantize_model_nf4(model: nn.Module, targets: list[str] | None, compute_dtype: torch.dtype) -> int:
    """Replace the matching nn.Linear layers (all but the output head when `targets` is None) by NF4Linear.

    Returns how many layers were quantized."""
    count = 0
    for name, module in list(model.named_modules()):
        if type(module) is not nn.Linear or name.split(".")[-1] in ("lm_head", "score"):
            continue
        if targets and name.split(".")[-1] not in targets:
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, NF4Linear.from_linear(module, compute_dtype))
        count += 1
    return count
