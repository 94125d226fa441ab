"""k-bit quantization grids that land in our stored formats (int4 packed nibbles, int8 per channel).

Calibrated quantizers (GPTQ, AWQ) choose the integer values themselves, then hand them to `to_module`,
which builds the same `Int4Linear`/`Int8Linear` that round-to-nearest produces, so every loader and
kernel reads them unchanged.

3-bit: the int4 storage holds any value 0..15 with a float zero point, so a 3-bit grid (8 levels,
asymmetric 0..7, symmetric 4..11 around the implicit zero 8) is stored as int4 values: the quality of
3 bits, the size and speed of int4 (there is no 3-bit kernel to read a denser packing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.quant import Int4Linear, Int8Linear, QuantLinear, pack_int4

INT4_BITS = (2, 3, 4)


@dataclass(frozen=True)
class Grid:
    """Integer grid of one method: int4 storage with `bits` levels, or int8 (symmetric, per channel)."""

    method: str = "int4"  # "int4" or "int8"
    bits: int = 4
    symmetric: bool = False

    def __post_init__(self) -> None:
        if self.method == "int4" and self.bits not in INT4_BITS:
            raise LmsmithError(f"--bits {self.bits} does not fit int4 storage", "use --bits 4, 3 or 2 with --method int4")
        if self.method == "int8" and self.bits != 8:
            raise LmsmithError(f"--bits {self.bits} with --method int8", "int8 is always 8 bits; use --method int4 for 4/3/2 bits")
        if self.method not in ("int4", "int8"):
            raise LmsmithError(f"calibrated quantization writes int4 or int8, not {self.method}", "use --method int4 or int8")

    @property
    def levels(self) -> int:
        return 2 ** self.bits

    @property
    def qmin(self) -> int:
        if self.method == "int8":
            return -127
        return 8 - self.levels // 2 if self.symmetric else 0

    @property
    def qmax(self) -> int:
        if self.method == "int8":
            return 127
        return 8 + self.levels // 2 - 1 if self.symmetric else self.levels - 1

    def params(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale [N], zero [N]) for the rows of `w` [N, g] (one group); w ≈ (q - zero) * scale."""
        w = w.float()
        if self.method == "int8" or self.symmetric:
            half = 127.0 if self.method == "int8" else float(self.levels // 2 - 1)
            scale = (w.abs().amax(dim=1) / half).clamp(min=1e-10)
            zero = torch.full_like(scale, 0.0 if self.method == "int8" else 8.0)
            return scale, zero
        lo, hi = w.amin(dim=1), w.amax(dim=1)
        scale = ((hi - lo) / (self.levels - 1)).clamp(min=1e-10)
        return scale, -lo / scale

    def quantize(self, w: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        """Integer values (as float) of `w` [N, ...] on the grid with per-row scale and zero."""
        shape = (-1,) + (1,) * (w.dim() - 1)
        return torch.round(w / scale.reshape(shape) + zero.reshape(shape)).clamp_(self.qmin, self.qmax)

    @staticmethod
    def dequantize(q: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor) -> torch.Tensor:
        shape = (-1,) + (1,) * (q.dim() - 1)
        return (q - zero.reshape(shape)) * scale.reshape(shape)

    def fake_quant(self, w: torch.Tensor, group_size: int | None) -> torch.Tensor:
        """Round-to-nearest of a whole weight [N, K] on this grid (groups of `group_size`; int8: per row)."""
        return weight_of(*self.rtn(w, group_size)).to(w.dtype)

    def rtn(self, w: torch.Tensor, group_size: int | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Round-to-nearest: (q [N, K], scales [N, G], zeros [N, G])."""
        n, k = w.shape
        g = k if self.method == "int8" else int(group_size or k)
        wg = w.float().reshape(n * (k // g), g)  # one row per (output row, group): one vectorized pass
        s, z = self.params(wg)
        q = self.quantize(wg, s, z)
        return q.reshape(n, k), s.reshape(n, k // g), z.reshape(n, k // g)


def to_module(linear: nn.Linear, grid: Grid, q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor,
              group_size: int | None) -> QuantLinear:
    """The stored module for integer values `q` [N, K] with scales/zeros [N, G] (int8: G = 1)."""
    dtype, device = linear.weight.dtype, linear.weight.device
    bias = linear.bias is not None
    if grid.method == "int8":
        m: QuantLinear = Int8Linear(linear.in_features, linear.out_features, bias, dtype, device)
        m.qweight.copy_(q.to(torch.int8))
        m.scales.copy_(scales.reshape(-1))
    else:
        m = Int4Linear(linear.in_features, linear.out_features, bias, dtype, device, group_size=int(group_size or 128),
                       symmetric=grid.symmetric)
        m.qweight.copy_(pack_int4(q.to(torch.uint8)))
        m.scales.copy_(scales)
        if not grid.symmetric:
            m.zeros.copy_(zeros)
    if bias:
        m.bias.data.copy_(linear.bias.detach())
    return m


def weight_of(q: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor) -> torch.Tensor:
    """The dequantized weight [N, K] of integer values and per-group scales/zeros [N, G]."""
    n, k = q.shape
    g = k // scales.shape[1]
    return ((q.reshape(n, -1, g) - zeros[..., None]) * scales[..., None]).reshape(n, k)
