"""Attention over the paged KV cache. `paged_attention` is the one function a fused kernel replaces.

The cache of one layer is `[num_blocks, block_size, kv_heads, head_dim]` for K and for V. Each step first writes
the new tokens' K/V into their slots, then every sequence attends to its own blocks: decode sequences (one query
token each) as one padded batch, prefill chunks one by one (a first chunk uses its fresh K/V directly).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from lmsmith.serve import paged_decode as _pd


@dataclass
class PrefillChunk:
    token_start: int  # row of its first query token in the flattened batch
    num_tokens: int
    pos_start: int  # position of its first query token (= tokens already in the cache)
    block_table: torch.Tensor | None  # [num_blocks] long; None for a first chunk (pos_start 0), which needs none


@dataclass
class AttentionMetadata:
    slot_mapping: torch.Tensor | None  # [T] cache slot for each token's new K/V (None: the prefill graphs hold them)
    decode_rows: torch.Tensor | None  # [B] rows of single-token (decode) queries
    decode_block_tables: torch.Tensor | None  # [B, max_blocks] (padded with 0)
    decode_context_lens: torch.Tensor | None  # [B] keys each decode query sees (including itself)
    prefills: list[PrefillChunk]
    block_size: int
    sliding_window: int | None = None
    decode_only: bool = False  # every row is a decode query (rows == arange(T)): the CUDA-graph path
    positions: torch.Tensor | None = None  # [T] (the fused RoPE kernel reads them on the GPU)
    # CPU decode-only steps: each row's block table and context length as host lists, so the lean CPU step
    # (`LlamaForCausalLM._forward_decode_cpu`) slices the cache without device index ops
    host_tables: list[list[int]] | None = None
    host_lens: list[int] | None = None
    fresh_groups: tuple | None = None  # `_batched_fresh_prefill`'s plan, made by the first layer, reused by the rest


def write_kv(k_cache: torch.Tensor, v_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
             slots: torch.Tensor) -> None:
    kv_heads, head_dim = k.shape[-2:]
    k_cache.view(-1, kv_heads, head_dim).index_copy_(0, slots, k)
    v_cache.view(-1, kv_heads, head_dim).index_copy_(0, slots, v)


def cache_span(flat: torch.Tensor, table: list[int], start: int, end: int, block_size: int) -> torch.Tensor:
    """Cached rows `start:end` `[n, kv_heads, d]` of one sequence from a layer's flat cache `[slots, kv_heads, d]`:
    a view when its blocks are consecutive (the usual case for a lone sequence), else a gather."""
    nb = -(-end // block_size)
    first = table[0]
    if table[nb - 1] - first == nb - 1 and (nb < 3 or table[:nb] == list(range(first, first + nb))):
        return flat[first * block_size + start:first * block_size + end]
    return flat.view(-1, block_size, *flat.shape[1:])[table[:nb]].flatten(0, 1)[start:end]


def decode_attention_cpu(q: torch.Tensor, k_flat: torch.Tensor, v_flat: torch.Tensor, table: list[int], ctx: int,
                         scale: float, window: int | None, block_size: int) -> torch.Tensor:
    """One decode query `[heads, d]` against its `ctx` cached keys (flat caches `[slots, kv_heads, d]`), as two
    batched matmuls over the kv heads: on a CPU 2-3x faster than SDPA's flash kernel at decode sizes."""
    start = 0 if window is None else max(0, ctx - window)
    k = cache_span(k_flat, table, start, ctx, block_size)
    v = cache_span(v_flat, table, start, ctx, block_size)
    kv, d = k.shape[1:]
    s = torch.bmm(q.view(kv, -1, d), k.permute(1, 2, 0))  # [kv, group, n]
    if s.dtype == torch.float32:
        p = torch.softmax(s.mul_(scale), dim=-1)
    else:  # 16-bit caches: softmax statistics in fp32
        p = torch.softmax(s.float().mul_(scale), dim=-1).to(v.dtype)
    return torch.bmm(p, v.transpose(0, 1)).view(-1, d)


def _window_mask(q_pos: torch.Tensor, k_len: int, window: int | None, device) -> torch.Tensor:
    """[Q, K] bool: key j visible to the query at position p iff j <= p (and p - j < window)."""
    kpos = torch.arange(k_len, device=device)
    mask = kpos[None, :] <= q_pos[:, None]
    if window is not None:
        mask &= kpos[None, :] > q_pos[:, None] - window
    return mask


def paged_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor,
                    meta: AttentionMetadata, scale: float, write: bool = True,
                    out: torch.Tensor | None = None) -> torch.Tensor:
    """q: [T, heads, d]; k, v: [T, kv_heads, d] (already rotated). Returns [T, heads, d] (in `out` if given:
    the prefill graphs' static buffer, whose rows past the metadata's are padding and left as they are).
    `write=False`: k/v are already in the cache (the fused RoPE kernel put them there)."""
    if write:
        write_kv(k_cache, v_cache, k, v, meta.slot_mapping)
    window = meta.sliding_window
    fused = _pd.available(q.device)
    if meta.decode_only and fused and out is None:
        return _pd.paged_decode(q, k_cache, v_cache, meta.decode_block_tables, meta.decode_context_lens, scale, window)
    if out is None:
        out = torch.empty_like(q)
    kv_heads, d = k.shape[-2:]
    gqa = q.shape[1] != kv_heads
    if meta.decode_rows is not None and fused:
        out[meta.decode_rows] = _pd.paged_decode(q[meta.decode_rows], k_cache, v_cache, meta.decode_block_tables,
                                                 meta.decode_context_lens, scale, window)
    elif meta.decode_rows is not None:
        bt = meta.decode_block_tables
        b = bt.shape[0]
        keys = k_cache[bt].view(b, -1, kv_heads, d).transpose(1, 2)
        vals = v_cache[bt].view(b, -1, kv_heads, d).transpose(1, 2)
        kpos = torch.arange(keys.shape[2], device=q.device)
        lens = meta.decode_context_lens[:, None]
        mask = kpos[None, :] < lens
        if window is not None:
            mask &= kpos[None, :] >= lens - window
        qd = q[meta.decode_rows].unsqueeze(2)  # [B, heads, 1, d]
        o = F.scaled_dot_product_attention(qd, keys, vals, attn_mask=mask[:, None, None, :], scale=scale,
                                           enable_gqa=gqa)
        out[meta.decode_rows] = o.squeeze(2)
    if not meta.prefills:
        return out
    if fused:  # flash attention (math for masks/fp32): no per-shape plan building as cuDNN does on new shapes
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):
            rest = _batched_fresh_prefill(q, k, v, out, meta, scale, gqa) if len(meta.prefills) > 1 else meta.prefills
            _prefill_chunks(q, k, v, k_cache, v_cache, out, rest, scale, gqa, window)
    else:
        _prefill_chunks(q, k, v, k_cache, v_cache, out, meta.prefills, scale, gqa, window)
    return out


def _prefill_chunks(q, k, v, k_cache, v_cache, out, chunks: list[PrefillChunk], scale: float, gqa: bool,
                    window: int | None) -> None:
    kv_heads, d = k.shape[-2:]
    for c in chunks:
        rows = slice(c.token_start, c.token_start + c.num_tokens)
        qc = q[rows].transpose(0, 1).unsqueeze(0)  # [1, heads, n, d]
        ctx = c.pos_start + c.num_tokens
        if c.pos_start == 0:
            keys, vals = k[rows], v[rows]
        else:
            keys = k_cache[c.block_table].view(-1, kv_heads, d)[:ctx]
            vals = v_cache[c.block_table].view(-1, kv_heads, d)[:ctx]
        keys = keys.transpose(0, 1).unsqueeze(0)
        vals = vals.transpose(0, 1).unsqueeze(0)
        if c.pos_start == 0 and (window is None or ctx <= window):
            o = F.scaled_dot_product_attention(qc, keys, vals, is_causal=True, scale=scale, enable_gqa=gqa)
        elif window is None and (o := _lower_right_causal(qc, keys, vals, scale, gqa)) is not None:
            pass
        else:
            qpos = torch.arange(c.pos_start, ctx, device=q.device)
            mask = _window_mask(qpos, ctx, window, q.device)
            o = F.scaled_dot_product_attention(qc, keys, vals, attn_mask=mask[None, None], scale=scale, enable_gqa=gqa)
        out[rows] = o.squeeze(0).transpose(0, 1)


_LOWER_RIGHT_OK = True


def _lower_right_causal(q, k, v, scale: float, gqa: bool) -> torch.Tensor | None:
    """A chunk after cached tokens (prefix-cache hit, later prefill chunk) on the GPU: causal attention aligned to
    the bottom right, which flash attention runs natively; the boolean-mask alternative forces the math backend,
    which materializes a [heads, n, ctx] score matrix. (Neither is bit-identical to the same rows of a full
    prefill: on an H100 both differ by one bf16 ulp, so greedy text may depend on prefix-cache hits.)"""
    global _LOWER_RIGHT_OK
    if not (_LOWER_RIGHT_OK and q.is_cuda):
        return None
    from torch.nn.attention.bias import causal_lower_right

    try:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(q.shape[-2], k.shape[-2]),
                                              scale=scale, enable_gqa=gqa)
    except (RuntimeError, TypeError, ValueError):  # an older torch or an unsupported shape: the mask path
        _LOWER_RIGHT_OK = False
        return None


def _batched_fresh_prefill(q, k, v, out, meta: AttentionMetadata, scale: float, gqa: bool) -> list[PrefillChunk]:
    """First chunks of equal length attend only to themselves: one causal SDPA call per length (flash attention)
    instead of one per prompt. Returns the chunks left for the per-chunk path."""
    if meta.fresh_groups is None:  # once per step, not per layer
        meta.fresh_groups = _fresh_groups(meta, q.device)
    groups, rest = meta.fresh_groups
    for n, count, idx in groups:
        qb, kb, vb = (t[idx].view(count, n, *t.shape[1:]).transpose(1, 2) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=scale, enable_gqa=gqa)
        out[idx] = o.transpose(1, 2).reshape(count * n, *q.shape[1:])
    return rest


def _fresh_groups(meta: AttentionMetadata, device) -> tuple[list[tuple[int, int, slice | torch.Tensor]], list[PrefillChunk]]:
    """([(length, count, rows)], chunks left): `rows` is a slice when the group's chunks sit back to back in the
    batch (a burst of equal prompts: views, no gather), else an index tensor built on the host and copied once."""
    window = meta.sliding_window
    by_len: dict[int, list[PrefillChunk]] = {}
    rest = []
    for c in meta.prefills:
        if c.pos_start == 0 and (window is None or c.num_tokens <= window):
            by_len.setdefault(c.num_tokens, []).append(c)
        else:
            rest.append(c)
    groups = []
    for n, cs in by_len.items():
        if len(cs) == 1:
            rest.extend(cs)
            continue
        cs.sort(key=lambda c: c.token_start)
        first = cs[0].token_start
        if all(c.token_start == first + i * n for i, c in enumerate(cs)):
            rows: slice | torch.Tensor = slice(first, first + len(cs) * n)
        else:
            rows = torch.cat([torch.arange(c.token_start, c.token_start + n) for c in cs])
            rows = rows.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else rows.to(device)
        groups.append((n, len(cs), rows))
    return groups, rest
