"""Paged decode attention for CUDA: a Triton kernel that reads K/V through the block table, no gather.

One program per (sequence, KV head) computes all query heads of that GQA group against the sequence's keys,
a tile of `TILE` tokens at a time with an online softmax. Token t of a sequence lives in cache block
`block_table[t // block_size]`, row `t % block_size`, so a tile may span several blocks: the kernel computes
each token's address itself. Context lengths are read on the GPU, which keeps the kernel inside a CUDA graph.
"""

from __future__ import annotations

import torch

try:  # Triton ships with CUDA builds of torch; the CPU path never imports it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


if triton is not None:

    # table/length strides differ between the graph path and the eager path: one variant for both (the cache
    # strides stay specialized, so K/V loads keep their 16-byte vectors)
    @triton.jit(do_not_specialize=["stride_bt", "stride_lens", "window"])
    def _paged_decode_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr,
                             stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_bt, stride_lens,
                             stride_ot, stride_oh, scale, window,
                             G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                             BS: tl.constexpr, TILE: tl.constexpr, HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr):
        b = tl.program_id(0)
        kh = tl.program_id(1)
        length = tl.load(lens_ptr + b * stride_lens).to(tl.int32)
        g = tl.arange(0, GP)
        d = tl.arange(0, DP)
        gmask = g < G
        dmask = d < D
        q = tl.load(q_ptr + b * stride_qt + (kh * G + g)[:, None] * stride_qh + d[None, :],
                    mask=gmask[:, None] & dmask[None, :], other=0.0)
        m_i = tl.full([GP], float("-inf"), tl.float32)
        l_i = tl.zeros([GP], tl.float32)
        acc = tl.zeros([GP, DP], tl.float32)
        first = 0
        if HAS_WINDOW:
            first = tl.maximum(length - window, 0)
        start = (first // TILE) * TILE
        for t0 in range(start, length, TILE):
            t = t0 + tl.arange(0, TILE)
            tmask = (t < length) & (t >= first)
            blk = tl.load(bt_ptr + b * stride_bt + t // BS, mask=tmask, other=0).to(tl.int64)
            off = blk * stride_kb + (t % BS) * stride_ks + kh * stride_kh
            kv_mask = tmask[:, None] & dmask[None, :]
            k = tl.load(k_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                s = tl.dot(q, tl.trans(k), input_precision="ieee")
            else:
                s = tl.dot(q, tl.trans(k))
            s = s * scale
            s = tl.where(tmask[None, :], s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, 1))
            alpha = tl.exp(m_i - m_new)
            p = tl.exp(s - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            v = tl.load(v_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
            if IEEE:
                acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
            else:
                acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        out = acc / l_i[:, None]
        tl.store(out_ptr + b * stride_ot + (kh * G + g)[:, None] * stride_oh + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=gmask[:, None] & dmask[None, :])


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, window: int | None = None,
                 out: torch.Tensor | None = None) -> torch.Tensor:
    """q: [B, heads, d] (one query token per sequence); caches [blocks, block_size, kv_heads, d];
    block_tables [B, max_blocks] int; context_lens [B] int (>= 1). Returns [B, heads, d]."""
    b, heads, d = q.shape
    _, bs, kv_heads, _ = k_cache.shape
    g = heads // kv_heads
    if out is None:
        out = torch.empty_like(q)
    if q.stride(-1) != 1:
        q = q.contiguous()
    dp = max(16, triton.next_power_of_2(d))
    tile = 64 if dp <= 128 else 32
    _paged_decode_kernel[(b, kv_heads)](
        q, k_cache, v_cache, block_tables, context_lens, out,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        context_lens.stride(0), out.stride(0), out.stride(1), scale, window or 0,
        G=g, GP=max(16, triton.next_power_of_2(g)), D=d, DP=dp, BS=bs, TILE=tile, HAS_WINDOW=window is not None,
        IEEE=q.dtype == torch.float32, num_warps=4, num_stages=2)
    return out
