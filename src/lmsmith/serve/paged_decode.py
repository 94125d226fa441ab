"""Paged decode attention for CUDA: a Triton kernel that reads K/V through the block table, no gather.

One program per (sequence, KV head) computes all query heads of that GQA group against the sequence's keys,
a tile of `TILE` tokens at a time with an online softmax. Token t of a sequence lives in cache block
`block_table[t // block_size]`, row `t % block_size`, so a tile may span several blocks: the kernel computes
each token's address itself. Context lengths are read on the GPU, which keeps the kernel inside a CUDA graph.

Small batches have too few (sequence, KV head) pairs to fill the GPU (batch 1 of an 8-KV-head model: 8
programs, each walking the whole context), so there the context is split (flash-decoding): `splits` programs
per pair each reduce a slice of the tiles to a partial (max, sum, weighted values), and a second kernel merges
the partials. The split count depends only on the batch size, so it is fixed inside each captured graph.
"""

from __future__ import annotations

import os

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


if triton is not None:

    @triton.jit(do_not_specialize=["stride_bt", "stride_lens", "window"])
    def _paged_decode_split_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, m_ptr, l_ptr, acc_ptr,
                                   stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_bt, stride_lens,
                                   scale, window, SPLITS: tl.constexpr,
                                   G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                                   BS: tl.constexpr, TILE: tl.constexpr, HAS_WINDOW: tl.constexpr,
                                   IEEE: tl.constexpr):
        b = tl.program_id(0)
        kh = tl.program_id(1)
        sp = tl.program_id(2)
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
        per = tl.cdiv(tl.cdiv(length - start, TILE), SPLITS) * TILE
        lo = start + sp * per
        hi = tl.minimum(lo + per, length)
        for t0 in range(lo, hi, TILE):
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
        part = (b * tl.num_programs(1) + kh) * SPLITS + sp  # [B, KV, SPLITS, G(, D)] partials
        tl.store(m_ptr + part * G + g, m_i, mask=gmask)
        tl.store(l_ptr + part * G + g, l_i, mask=gmask)
        tl.store(acc_ptr + (part * G + g)[:, None] * D + d[None, :], acc, mask=gmask[:, None] & dmask[None, :])

    @triton.jit
    def _merge_splits_kernel(m_ptr, l_ptr, acc_ptr, out_ptr, stride_ot, stride_oh, SPLITS: tl.constexpr,
                             SP: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DP: tl.constexpr):
        b = tl.program_id(0)
        kh = tl.program_id(1)
        gi = tl.program_id(2)
        sp = tl.arange(0, SP)
        d = tl.arange(0, DP)
        smask = sp < SPLITS
        part = ((b * tl.num_programs(1) + kh) * SPLITS + sp) * G + gi
        m = tl.load(m_ptr + part, mask=smask, other=float("-inf"))
        l = tl.load(l_ptr + part, mask=smask, other=0.0)
        mx = tl.max(m, 0)
        w = tl.where(m == float("-inf"), 0.0, tl.exp(m - mx))
        acc = tl.load(acc_ptr + part[:, None] * D + d[None, :], mask=smask[:, None] & (d < D)[None, :], other=0.0)
        out = tl.sum(acc * w[:, None], 0) / tl.sum(l * w, 0)
        tl.store(out_ptr + b * stride_ot + (kh * G + gi) * stride_oh + d, out.to(out_ptr.dtype.element_ty), mask=d < D)


NUM_SMS_HINT = 132  # H100 SXM; only sets how finely small batches split the context
MAX_SPLITS = 16
SPLITS_ENV = "LMSMITH_DECODE_SPLITS"  # "exact": round-3 behaviour (any split count, compiled when first met)


def exact_splits() -> bool:
    return os.environ.get(SPLITS_ENV, "") == "exact"


def num_splits(batch: int, kv_heads: int) -> int:
    """Context splits so that a small batch still launches about two programs per SM, rounded up to a power of two.

    The split count is a compile-time constant of the kernels, so every distinct value is its own Triton compile
    (~0.5 s on a fresh machine). The CUDA graphs fix it per batch bucket, but an eager mixed step (prompt tokens
    next to 3, 5, 6, 9 ... decode rows) used to meet a new value in the middle of serving and stall every request in
    flight while it compiled. Rounded, only 1, 2, 4, 8 and 16 occur, and `warm_up` compiles them all at start."""
    pairs = batch * kv_heads
    if pairs >= NUM_SMS_HINT:
        return 1
    s = min(MAX_SPLITS, -(-2 * NUM_SMS_HINT // pairs))
    return s if exact_splits() else min(MAX_SPLITS, 1 << (s - 1).bit_length())


def split_variants() -> tuple[int, ...]:
    """Every split count `num_splits` can return (without LMSMITH_DECODE_SPLITS=exact)."""
    out, s = [1], 2
    while s <= MAX_SPLITS:
        out.append(s)
        s *= 2
    return tuple(out)


def warm_up(k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int, window: int | None = None) -> int:
    """Compile every variant of the decode kernels the eager path can launch (one per split count, with freshly
    allocated tables and lengths as the eager metadata has them) on a one-token dummy query against block 0, so no
    serving step waits for a compile. Returns how many variants ran."""
    if triton is None or k_cache.device.type != "cuda" or exact_splits():
        return 0
    d = k_cache.shape[-1]
    q = torch.zeros(1, heads, d, dtype=k_cache.dtype, device=k_cache.device)
    tables = torch.zeros(1, 1, dtype=torch.long, device=k_cache.device)
    lens = torch.ones(1, dtype=torch.long, device=k_cache.device)
    for s in split_variants():
        paged_decode(q, k_cache, v_cache, tables, lens, 1.0, window, splits=s)
    return len(split_variants())


def paged_decode(q: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                 context_lens: torch.Tensor, scale: float, window: int | None = None,
                 out: torch.Tensor | None = None, splits: int | None = None) -> torch.Tensor:
    """q: [B, heads, d] (one query token per sequence); caches [blocks, block_size, kv_heads, d];
    block_tables [B, max_blocks] int; context_lens [B] int (>= 1). Returns [B, heads, d].
    `splits`: context splits per (sequence, KV head); None picks by batch size."""
    b, heads, d = q.shape
    _, bs, kv_heads, _ = k_cache.shape
    g = heads // kv_heads
    if out is None:
        out = torch.empty_like(q)
    if q.stride(-1) != 1:
        q = q.contiguous()
    dp = max(16, triton.next_power_of_2(d))
    splits = num_splits(b, kv_heads) if splits is None else splits
    if splits > 1:
        tile = 32
        m = torch.empty(b, kv_heads, splits, g, dtype=torch.float32, device=q.device)
        l = torch.empty_like(m)
        acc = torch.empty(b, kv_heads, splits, g, d, dtype=torch.float32, device=q.device)
        _paged_decode_split_kernel[(b, kv_heads, splits)](
            q, k_cache, v_cache, block_tables, context_lens, m, l, acc,
            q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2),
            block_tables.stride(0), context_lens.stride(0), scale, window or 0, SPLITS=splits,
            G=g, GP=max(16, triton.next_power_of_2(g)), D=d, DP=dp, BS=bs, TILE=tile,
            HAS_WINDOW=window is not None, IEEE=q.dtype == torch.float32, num_warps=4, num_stages=2)
        _merge_splits_kernel[(b, kv_heads, g)](m, l, acc, out, out.stride(0), out.stride(1), SPLITS=splits,
                                               SP=max(2, triton.next_power_of_2(splits)), G=g, D=d, DP=dp,
                                               num_warps=1)
        return out
    tile = 64 if dp <= 128 else 32
    _paged_decode_kernel[(b, kv_heads)](
        q, k_cache, v_cache, block_tables, context_lens, out,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        context_lens.stride(0), out.stride(0), out.stride(1), scale, window or 0,
        G=g, GP=max(16, triton.next_power_of_2(g)), D=d, DP=dp, BS=bs, TILE=tile, HAS_WINDOW=window is not None,
        IEEE=q.dtype == torch.float32, num_warps=4, num_stages=2)
    return out
