"""Tensor math of the quantized formats: quantize, pack and dequantize int8, int4 and fp8 weights."""

from __future__ import annotations

import torch

FP8_MAX = 448.0  # largest finite float8_e4m3fn


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8: w ≈ q * scale[:, None], q in [-127, 127]."""
    w = w.float()
    scales = (w.abs().amax(dim=1) / 127.0).clamp(min=1e-10)
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8)
    return q, scales


def dequantize_int8(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.to(dtype) * scales.to(dtype)[:, None])


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """[N, K] values 0..15 -> [N, K/2] uint8; element 2j in the low nibble, 2j+1 in the high one."""
    q = q.to(torch.uint8)
    return q[:, 0::2] | (q[:, 1::2] << 4)


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of `pack_int4`: [N, K/2] uint8 -> [N, K] uint8 values 0..15."""
    low, high = packed & 0x0F, packed >> 4
    return torch.stack([low, high], dim=-1).reshape(packed.shape[0], -1)


def quantize_int4(w: torch.Tensor, group_size: int, symmetric: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Group-wise 4-bit: w ≈ (q - zero) * scale per group of `group_size` input features, q in 0..15.

    Asymmetric: each group's min..max maps onto 0..15 with a float zero point (the grid of llama.cpp's
    Q4_1 and of tinygemm; an integer zero point would shift the grid by up to half a step). Symmetric:
    the zero point is 8 for every group (not stored) and scale = absmax / 7.
    Returns (packed uint8 [N, K/2], scales float32 [N, K/g], zeros float32 [N, K/g] or None)."""
    n, k = w.shape
    wg = w.float().reshape(n, k // group_size, group_size)
    if symmetric:
        scales = (wg.abs().amax(dim=-1) / 7.0).clamp(min=1e-10)
        q = (torch.round(wg / scales[..., None]) + 8).clamp_(0, 15)
        zeros = None
    else:
        lo, hi = wg.amin(dim=-1), wg.amax(dim=-1)
        scales = ((hi - lo) / 15.0).clamp(min=1e-10)
        q = torch.round((wg - lo[..., None]) / scales[..., None]).clamp_(0, 15)
        zeros = -lo / scales
    return pack_int4(q.reshape(n, k)), scales, zeros


def int4_zero_points(scales: torch.Tensor, zeros: torch.Tensor | None) -> torch.Tensor:
    return torch.full_like(scales, 8.0) if zeros is None else zeros.to(scales.dtype)


def dequantize_int4(packed: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group_size: int,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    n = packed.shape[0]
    q = unpack_int4(packed).to(dtype).reshape(n, -1, group_size)
    s = scales.to(dtype)
    z = int4_zero_points(s, zeros)
    return ((q - z[..., None]) * s[..., None]).reshape(n, -1)


def quantize_fp8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel scaled float8_e4m3fn: w ≈ q.float() * scale[:, None]."""
    w = w.float()
    scales = (w.abs().amax(dim=1) / FP8_MAX).clamp(min=1e-12)
    q = (w / scales[:, None]).clamp_(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return q, scales


def dequantize_fp8(q: torch.Tensor, scales: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return (q.float() * scales.float()[:, None]).to(dtype)


def quantize_activations_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token (per-row) e4m3 scaling of a [M, K] activation."""
    xf = x.float()
    scale = (xf.abs().amax(dim=-1, keepdim=True) / FP8_MAX).clamp(min=1e-12)
    return (xf / scale).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale
