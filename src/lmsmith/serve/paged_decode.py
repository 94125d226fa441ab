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

from lmsmith.serve import pdl
from lmsmith.serve.pdl import gdc_launch_dependents, gdc_wait  # noqa: F401 - used in the kernels

try:  # Triton ships with CUDA builds of torch; the CPU path never imports it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None


def available(device: torch.device) -> bool:
    return triton is not None and device.type == "cuda"


if triton is not None:

    @triton.jit
    def _attend_tile(q, k_ptr, v_ptr, row_bt, t0, end, first, kh, stride_kb, stride_ks, stride_kh, d, dmask, scale,
                     m_i, l_i, acc, BS: tl.constexpr, TILE: tl.constexpr, IEEE: tl.constexpr):
        """One online-softmax step over the keys t0 .. t0 + TILE of a sequence (those in [first, end)), read through
        its block table `row_bt`: returns the updated (running max, running sum, weighted values)."""
        t = t0 + tl.arange(0, TILE)
        tmask = (t < end) & (t >= first)
        blk = tl.load(row_bt + t // BS, mask=tmask, other=0).to(tl.int64)
        off = blk * stride_kb + (t % BS) * stride_ks + kh * stride_kh
        kv_mask = tmask[:, None] & dmask[None, :]
        k = tl.load(k_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        if IEEE:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q, tl.trans(k))
        s = tl.where(tmask[None, :], s * scale, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        alpha = tl.where(m_new == float("-inf"), 0.0, tl.exp(m_i - m_new))  # a row with no key yet stays empty
        p = tl.where(m_new[:, None] == float("-inf"), 0.0, tl.exp(s - m_new[:, None]))
        l_i = l_i * alpha + tl.sum(p, 1)
        v = tl.load(v_ptr + off[:, None] + d[None, :], mask=kv_mask, other=0.0)
        if IEEE:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        return m_new, l_i, acc

    # table/length strides differ between the graph path and the eager path: one variant for both (the cache
    # strides stay specialized, so K/V loads keep their 16-byte vectors)
    @triton.jit(do_not_specialize=["stride_bt", "stride_lens", "window"])
    def _paged_decode_kernel(q_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr, out_ptr,
                             stride_qt, stride_qh, stride_kb, stride_ks, stride_kh, stride_bt, stride_lens,
                             stride_ot, stride_oh, scale, window,
                             G: tl.constexpr, GP: tl.constexpr, D: tl.constexpr, DP: tl.constexpr,
                             BS: tl.constexpr, TILE: tl.constexpr, HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
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
            m_i, l_i, acc = _attend_tile(q, k_ptr, v_ptr, bt_ptr + b * stride_bt, t0, length, first, kh, stride_kb,
                                         stride_ks, stride_kh, d, dmask, scale, m_i, l_i, acc, BS, TILE, IEEE)
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
                                   IEEE: tl.constexpr, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
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
            m_i, l_i, acc = _attend_tile(q, k_ptr, v_ptr, bt_ptr + b * stride_bt, t0, length, first, kh, stride_kb,
                                         stride_ks, stride_kh, d, dmask, scale, m_i, l_i, acc, BS, TILE, IEEE)
        part = (b * tl.num_programs(1) + kh) * SPLITS + sp  # [B, KV, SPLITS, G(, D)] partials
        tl.store(m_ptr + part * G + g, m_i, mask=gmask)
        tl.store(l_ptr + part * G + g, l_i, mask=gmask)
        tl.store(acc_ptr + (part * G + g)[:, None] * D + d[None, :], acc, mask=gmask[:, None] & dmask[None, :])

    @triton.jit
    def _merge_splits_kernel(m_ptr, l_ptr, acc_ptr, out_ptr, stride_ot, stride_oh, SPLITS: tl.constexpr,
                             SP: tl.constexpr, G: tl.constexpr, D: tl.constexpr, DP: tl.constexpr, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
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
            HAS_WINDOW=window is not None, IEEE=q.dtype == torch.float32, num_warps=4, num_stages=2, **pdl.launch())
        _merge_splits_kernel[(b, kv_heads, g)](m, l, acc, out, out.stride(0), out.stride(1), SPLITS=splits,
                                               SP=max(2, triton.next_power_of_2(splits)), G=g, D=d, DP=dp,
                                               num_warps=1, **pdl.launch())
        return out
    tile = 64 if dp <= 128 else 32
    _paged_decode_kernel[(b, kv_heads)](
        q, k_cache, v_cache, block_tables, context_lens, out,
        q.stride(0), q.stride(1), k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), block_tables.stride(0),
        context_lens.stride(0), out.stride(0), out.stride(1), scale, window or 0,
        G=g, GP=max(16, triton.next_power_of_2(g)), D=d, DP=dp, BS=bs, TILE=tile, HAS_WINDOW=window is not None,
        IEEE=q.dtype == torch.float32, num_warps=4, num_stages=2, **pdl.launch())
    return out


# ----------------------------------------------------------------------------------------------------------------
# The decode step's attention as ONE launch: RoPE of q and of the new k (read straight from the qkv projection),
# the new K/V written into the paged cache, the split-context attention, and the merge of the splits (done by the
# last program of each (sequence, KV head), which an atomic ticket elects). The separate path is three launches
# (rope_and_cache, the split kernel, the merge); at batch 1 those ~3.5 us per layer are ~2% of an 8B step.
# The new token is not read back from the cache (another program of the launch may not have written it yet):
# split 0 starts its online softmax from it, the other splits attend to the cached tokens only.

if triton is not None:

    @triton.jit(do_not_specialize=["stride_qkv", "stride_cos", "stride_pos", "stride_slot", "stride_bt",
                                   "stride_lens", "window"])
    def _decode_attn_kernel(qkv_ptr, cos_ptr, sin_ptr, pos_ptr, slot_ptr, k_ptr, v_ptr, bt_ptr, lens_ptr,
                            m_ptr, l_ptr, acc_ptr, cnt_ptr, out_ptr,
                            stride_qkv, stride_cos, stride_pos, stride_slot, stride_kb, stride_ks, stride_kh,
                            stride_bt, stride_lens, stride_ot, stride_oh, scale, window,
                            H: tl.constexpr, KV: tl.constexpr, SPLITS: tl.constexpr, G: tl.constexpr,
                            GP: tl.constexpr, GM: tl.constexpr, SP: tl.constexpr, D: tl.constexpr,
                            DP: tl.constexpr, HALF: tl.constexpr, BS: tl.constexpr, TILE: tl.constexpr,
                            HAS_WINDOW: tl.constexpr, IEEE: tl.constexpr, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        b = tl.program_id(0).to(tl.int64)
        kh = tl.program_id(1)
        sp = tl.program_id(2)
        length = tl.load(lens_ptr + b * stride_lens).to(tl.int32)  # keys visible, the new token included
        pos = tl.load(pos_ptr + b * stride_pos).to(tl.int64)  # the new token's position (== length - 1)
        g = tl.arange(0, GP)
        d = tl.arange(0, DP)
        gmask = g < G
        dmask = d < D
        lo_half = d < HALF
        partner = tl.where(lo_half, d + HALF, d - HALF)
        ci = tl.where(lo_half, d, d - HALF)
        c = tl.load(cos_ptr + pos * stride_cos + ci, mask=dmask, other=0.0).to(tl.float32)
        s = tl.where(lo_half, -1.0, 1.0) * tl.load(sin_ptr + pos * stride_cos + ci, mask=dmask, other=0.0).to(tl.float32)
        row = qkv_ptr + b * stride_qkv
        qoff = (kh * G + g)[:, None] * D
        qm = gmask[:, None] & dmask[None, :]
        q = tl.load(row + qoff + d[None, :], mask=qm, other=0.0).to(tl.float32) * c[None, :] + \
            tl.load(row + qoff + partner[None, :], mask=qm, other=0.0).to(tl.float32) * s[None, :]
        q = q.to(qkv_ptr.dtype.element_ty)  # rounded as the separate RoPE kernel stores it
        kb = row + (H + kh) * D
        knew = (tl.load(kb + d, mask=dmask, other=0.0).to(tl.float32) * c +
                tl.load(kb + partner, mask=dmask, other=0.0).to(tl.float32) * s).to(qkv_ptr.dtype.element_ty)
        vnew = tl.load(row + (H + KV + kh) * D + d, mask=dmask, other=0.0)
        if sp == 0:
            slot = tl.load(slot_ptr + b * stride_slot).to(tl.int64)
            coff = (slot // BS) * stride_kb + (slot % BS) * stride_ks + kh * stride_kh + d
            tl.store(k_ptr + coff, knew.to(k_ptr.dtype.element_ty), mask=dmask)
            tl.store(v_ptr + coff, vnew.to(v_ptr.dtype.element_ty), mask=dmask)
        s_new = tl.sum(q.to(tl.float32) * knew.to(tl.float32)[None, :], 1) * scale
        first = sp == 0
        m_i = tl.where(first, s_new, float("-inf"))
        l_i = tl.where(first, 1.0, 0.0) + tl.zeros([GP], tl.float32)
        acc = tl.where(first, 1.0, 0.0) * vnew.to(tl.float32)[None, :] + tl.zeros([GP, DP], tl.float32)
        cached = length - 1
        low = 0
        if HAS_WINDOW:
            low = tl.maximum(length - window, 0)
        start = (low // TILE) * TILE
        per = tl.cdiv(tl.cdiv(tl.maximum(cached - start, 0), TILE), SPLITS) * TILE
        lo = start + sp * per
        hi = tl.minimum(lo + per, cached)
        for t0 in range(lo, hi, TILE):
            m_i, l_i, acc = _attend_tile(q, k_ptr, v_ptr, bt_ptr + b * stride_bt, t0, cached, low, kh, stride_kb,
                                         stride_ks, stride_kh, d, dmask, scale, m_i, l_i, acc, BS, TILE, IEEE)
        om = gmask[:, None] & dmask[None, :]
        dst = out_ptr + b * stride_ot + (kh * G + g)[:, None] * stride_oh + d[None, :]
        if SPLITS == 1:
            tl.store(dst, (acc / l_i[:, None]).to(out_ptr.dtype.element_ty), mask=om)
        else:
            pair = b * KV + kh
            part = pair * SPLITS + sp  # [B, KV, SPLITS, G(, D)] partials
            tl.store(m_ptr + part * G + g, m_i, mask=gmask)
            tl.store(l_ptr + part * G + g, l_i, mask=gmask)
            tl.store(acc_ptr + (part * G + g)[:, None] * D + d[None, :], acc, mask=om)
            tl.debug_barrier()  # every thread's stores are issued before the ticket releases them
            ticket = tl.atomic_add(cnt_ptr + pair, 1, sem="acq_rel")
            if ticket == SPLITS - 1:  # the last split of this (sequence, KV head) merges all of them, in one load
                sj = tl.arange(0, SP)
                gq = tl.arange(0, GM)
                pm = (sj < SPLITS)[:, None] & (gq < G)[None, :]
                pidx = (pair * SPLITS + sj)[:, None] * G + gq[None, :]  # [SP, GM]
                ms = tl.load(m_ptr + pidx, mask=pm, other=float("-inf"), cache_modifier=".cg")
                mx = tl.max(ms, 0)
                w = tl.where(ms == float("-inf"), 0.0, tl.exp(ms - mx[None, :]))
                den = tl.sum(w * tl.load(l_ptr + pidx, mask=pm, other=0.0, cache_modifier=".cg"), 0)
                parts = tl.load(acc_ptr + pidx[:, :, None] * D + d[None, None, :],
                                mask=pm[:, :, None] & dmask[None, None, :], other=0.0, cache_modifier=".cg")
                o = tl.sum(parts * w[:, :, None], 0) / den[:, None]  # [GM, DP]
                tl.store(out_ptr + b * stride_ot + (kh * G + gq)[:, None] * stride_oh + d[None, :],
                         o.to(out_ptr.dtype.element_ty), mask=(gq < G)[:, None] & dmask[None, :])
                tl.atomic_xchg(cnt_ptr + pair, 0)  # ready for the next launch (kernels on a stream never overlap)


def one_launch_decode_attention(device: torch.device) -> bool:
    """Whether the model's own decode step (every CUDA-graph batch size) uses `decode_attention`: only when
    LMSMITH_DECODE_ATTN=fused. The batch-1 graph tries it anyway and keeps it where it replays faster (on an H100
    its first version, with a serial merge, was slower than the three launches: 1.30 vs 1.20 ms per 1B step)."""
    return available(device) and os.environ.get("LMSMITH_DECODE_ATTN", "split") == "fused"


_TICKETS: dict[torch.device, torch.Tensor] = {}


def _tickets(device: torch.device, n: int) -> torch.Tensor:
    """Zeroed int32 counters the fused kernel's merge tickets use; each launch leaves them zero again. Made by the
    warm-up step before any CUDA-graph capture (a counter allocated inside a capture would hold garbage)."""
    t = _TICKETS.get(device)
    if t is None or t.numel() < n:
        t = _TICKETS[device] = torch.zeros(max(n, 1024), dtype=torch.int32, device=device)
    return t


def decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                     slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, block_tables: torch.Tensor,
                     context_lens: torch.Tensor, heads: int, kv_heads: int, head_dim: int, scale: float,
                     window: int | None = None, splits: int | None = None) -> torch.Tensor:
    """One decode token per row, in one launch: qkv [B, (heads + 2 kv_heads) * d] (unrotated, straight from the
    projection) -> attention output [B, heads, d]; the new token's rotated k and its v are written into the cache
    at `slots`. cos/sin: the full tables (half of each row used, as `fused.rope_and_cache`); positions[b] must be
    context_lens[b] - 1 (the graph and eager decode steps both hold that)."""
    b = qkv.shape[0]
    g = heads // kv_heads
    splits = num_splits(b, kv_heads) if splits is None else splits
    out = torch.empty(b, heads, head_dim, dtype=qkv.dtype, device=qkv.device)
    dp = max(16, triton.next_power_of_2(head_dim))
    if splits > 1:
        m = torch.empty(b, kv_heads, splits, g, dtype=torch.float32, device=qkv.device)
        l = torch.empty_like(m)
        acc = torch.empty(b, kv_heads, splits, g, head_dim, dtype=torch.float32, device=qkv.device)
        cnt = _tickets(qkv.device, b * kv_heads)
    else:
        m = l = acc = cnt = out  # unused
    _decode_attn_kernel[(b, kv_heads, splits)](
        qkv, cos, sin, positions, slots, k_cache, v_cache, block_tables, context_lens, m, l, acc, cnt, out,
        qkv.stride(0), cos.stride(0), positions.stride(0), slots.stride(0), k_cache.stride(0), k_cache.stride(1),
        k_cache.stride(2), block_tables.stride(0), context_lens.stride(0), out.stride(0), out.stride(1), scale,
        window or 0, H=heads, KV=kv_heads, SPLITS=splits, G=g, GP=max(16, triton.next_power_of_2(g)),
        GM=triton.next_power_of_2(g), SP=max(2, triton.next_power_of_2(splits)), D=head_dim, DP=dp,
        HALF=head_dim // 2, BS=k_cache.shape[1], TILE=32 if splits > 1 else (64 if dp <= 128 else 32),
        HAS_WINDOW=window is not None, IEEE=qkv.dtype == torch.float32, num_warps=4, num_stages=2, **pdl.launch())
    return out
