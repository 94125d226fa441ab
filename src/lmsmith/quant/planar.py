"""Planar int32 layouts of int4 / int8 weights for the batch-1 GEMV (`lmsmith.serve.gemv`), built at load time.

A CUDA-core GEMV on packed weights is bound by instructions, not bytes, unless dequantization costs about one
logic op per weight (bench/results/quant_engine_notes.md: nibble extraction, int -> float, the FMA and per-group
bookkeeping at ~6 ops per weight held round 1 at ~1.1 TB/s). Here each row is cut into tiles of `PLANES * kw`
columns; word j of a tile (int32) holds column `i * kw + j` of the tile in its plane i. A thread loads 16 bytes
(4 words) and, for plane i, one AND-OR puts the plane's bits into the mantissa of 1.0:

    f = bits((word << shift_i) & (mask << pos_i) | 0x3F800000) = 1 + q * 2**(pos_i - 23)

so `sum f * x = sum x + 2**(pos_i - 23) * sum q * x`: one shift per three planes, one logic op and one FMA per
weight, and the columns a thread multiplies are contiguous in x. The positions are high in the mantissa (>= 7
bits), so removing `sum x` once per (row, plane) loses nothing at bf16 precision (the error is ~1e-4 relative).

int4: a plane lies inside one quantization group (kw divides the group), so its affine correction is one fused
pair per (row, plane): dot = A * sum(f x) + B * sum(x) with A = s * 2**(23 - pos), B = m - A (w = q * s + m),
both float32, packed in one int64 (low word A) so a single 8-byte load brings both.
int8: bytes stored offset-binary (b + 128); the scale stays per output channel.
"""

from __future__ import annotations

import torch

from lmsmith.quant.codecs import int4_zero_points, unpack_int4

INT4_PLANES = 8
INT8_PLANES = 4
# plane i: (left shift, or negative = right shift; the bit where its field lands after the shift)
INT4_FIELDS = ((3, 11), (3, 15), (3, 19), (-9, 11), (-9, 15), (-9, 19), (11, 11), (11, 15))
INT8_FIELDS = ((7, 7), (7, 15), (-9, 7), (-9, 15))
MAX_KW = 128


def plane_width(k: int, planes: int, group: int | None = None) -> int | None:
    """Words per plane (kw) for a row of k inputs: the largest power of two <= 128 with k % (planes * kw) == 0
    (and kw dividing the int4 group), or None when k has no such tiling (kw >= 4: one 16-byte load)."""
    kw = MAX_KW
    while kw >= 4:
        if k % (planes * kw) == 0 and (group is None or group % kw == 0):
            return kw
        kw //= 2
    return None


def _source_bits(fields) -> list[int]:
    """Bit offset in the stored word of each plane's field: where the shift moves it to its position."""
    return [pos - sh for sh, pos in fields]


def _words(values: torch.Tensor, fields) -> torch.Tensor:
    """values [N, T, planes, kw] small non-negative ints -> int32 words [N, T * kw]."""
    n, t, planes, kw = values.shape
    bits = torch.tensor(_source_bits(fields), dtype=torch.int64, device=values.device)
    w = (values.to(torch.int64) << bits[None, None, :, None]).sum(2)  # fields do not overlap: sum = or
    w = torch.where(w >= 2**31, w - 2**32, w)  # unsigned 32 bits -> two's complement int32
    return w.to(torch.int32).reshape(n, t * kw).contiguous()


def pack_int4_planar(qweight: torch.Tensor, scales: torch.Tensor, zeros: torch.Tensor | None, group: int
                     ) -> dict[str, torch.Tensor] | None:
    """Int4Linear's state -> {"q32": int32 [N, K/8], "ab": int64 [N, K/kw]}, or None where K does not tile."""
    n, k = qweight.shape[0], qweight.shape[1] * 2
    kw = plane_width(k, INT4_PLANES, group)
    if kw is None:
        return None
    q = unpack_int4(qweight).reshape(n, k // (INT4_PLANES * kw), INT4_PLANES, kw)
    s = scales.float()
    m = -int4_zero_points(s, None if zeros is None else zeros.float()) * s  # [N, G]
    start = torch.arange(0, k, kw, device=qweight.device)  # first column of every plane, in row order
    g = start // group
    pos = torch.tensor([p for _, p in INT4_FIELDS], dtype=torch.float32, device=qweight.device)
    mult = torch.exp2(23.0 - pos).repeat(k // (INT4_PLANES * kw))  # plane index = column // kw, planes cycle
    a = s[:, g] * mult[None, :]
    b = m[:, g] - a
    ab = a.view(torch.int32).to(torch.int64) & 0xFFFFFFFF | b.view(torch.int32).to(torch.int64) << 32
    return {"q32": _words(q, INT4_FIELDS), "ab": ab.contiguous()}


def pack_int8_planar(qweight: torch.Tensor) -> dict[str, torch.Tensor] | None:
    """Int8Linear's int8 [N, K] -> {"q32": int32 [N, K/4]} (offset-binary bytes, planar), or None."""
    n, k = qweight.shape
    kw = plane_width(k, INT8_PLANES)
    if kw is None:
        return None
    u = (qweight.to(torch.int16) + 128).reshape(n, k // (INT8_PLANES * kw), INT8_PLANES, kw)
    return {"q32": _words(u, INT8_FIELDS)}


def _planes(q32: torch.Tensor, fields, bits: int, kw: int) -> torch.Tensor:
    """The inverse of `_words` (tests, reference): int32 words [N, T * kw] -> ints [N, T * planes * kw]."""
    n = q32.shape[0]
    w = q32.to(torch.int64) & 0xFFFFFFFF
    vals = [(w >> b) & (2**bits - 1) for b in _source_bits(fields)]
    return torch.stack(vals, 1).reshape(n, len(fields), -1, kw).transpose(1, 2).reshape(n, -1)


def dequantize_int4_planar(lay: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The weight [N, K] from the int4 planar layout, as the kernel sees it: w = A * f + B per (row, plane)."""
    ab = lay["ab"]
    n, k = ab.shape[0], lay["q32"].shape[1] * 8
    kw = k // ab.shape[1]
    q = _planes(lay["q32"], INT4_FIELDS, 4, kw).float().reshape(n, -1, kw)
    a = (ab & 0xFFFFFFFF).to(torch.int32).view(torch.float32)[..., None]
    b = (ab >> 32).to(torch.int32).view(torch.float32)[..., None]
    pos = torch.tensor([p for _, p in INT4_FIELDS], dtype=torch.float32, device=q.device)
    f = 1.0 + q * torch.exp2(pos - 23.0).repeat(k // (INT4_PLANES * kw))[None, :, None]
    return (a * f + b).reshape(n, k).to(dtype)


def dequantize_int8_planar(lay: dict[str, torch.Tensor], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The int8 values [N, K] (unscaled) from the planar layout."""
    k = lay["q32"].shape[1] * INT8_PLANES
    return (_planes(lay["q32"], INT8_FIELDS, 8, plane_width(k, INT8_PLANES)) - 128).to(dtype)
