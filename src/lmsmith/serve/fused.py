"""Fused Triton kernels for the decoder's small element-wise stages (CUDA, bf16/fp16 serving).

At decode time each of these stages moves a few KB, so the cost is the kernel launch, not the bytes: eager
PyTorch spends 5-8 launches on an RMSNorm and 5 on each RoPE. Here each stage is one launch:
- `add_rmsnorm`: residual add and RMSNorm (fp32 statistics, as transformers computes them);
- `rope_and_cache`: RoPE on q and k straight from the fused qkv projection, plus the K/V write into the paged
  cache (positions and slots are read on the GPU, so it runs inside CUDA graphs);
- `silu_mul`: SwiGLU's silu(gate) * up;
- `argmax_rows`: greedy sampling in two stages (chunk maxima, then their maximum): torch's argmax over a 128k
  vocabulary runs as one block per row and takes ~28 us at batch 1.
The fp32 path keeps the eager ops, so fp32 greedy parity with transformers stays exact.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from lmsmith.serve import pdl
from lmsmith.serve.paged_decode import triton
from lmsmith.serve.pdl import gdc_launch_dependents, gdc_wait  # noqa: F401 - used in the kernels

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _add_rmsnorm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, n, eps,
                            HAS_RES: tl.constexpr, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        mask = cols < n
        x = tl.load(x_ptr + row * n + cols, mask=mask, other=0.0)
        if HAS_RES:
            x = x + tl.load(res_ptr + row * n + cols, mask=mask, other=0.0)  # rounded to the model dtype, like x + a
        tl.store(res_out_ptr + row * n + cols, x, mask=mask)
        h = x.to(tl.float32)
        var = tl.sum(h * h, 0) / n
        h = (h * tl.rsqrt(var + eps)).to(x.dtype)
        w = tl.load(w_ptr + cols, mask=mask, other=0.0)
        tl.store(out_ptr + row * n + cols, (w * h).to(out_ptr.dtype.element_ty), mask=mask)

    @triton.jit(do_not_specialize=["stride_t", "stride_cos", "stride_pos", "stride_slot"])
    def _rope_cache_kernel(qkv_ptr, cos_ptr, sin_ptr, pos_ptr, slot_ptr, q_out_ptr, k_out_ptr, k_cache_ptr,
                           v_cache_ptr, stride_t, stride_cos, stride_pos, stride_slot, H: tl.constexpr, KV: tl.constexpr,
                           D: tl.constexpr, HALF: tl.constexpr, HALF_P: tl.constexpr, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        t = tl.program_id(0).to(tl.int64)
        h = tl.program_id(1)
        i = tl.arange(0, HALF_P)
        mask = i < HALF
        pos = tl.load(pos_ptr + t * stride_pos).to(tl.int64)
        c = tl.load(cos_ptr + pos * stride_cos + i, mask=mask, other=0.0).to(tl.float32)
        s = tl.load(sin_ptr + pos * stride_cos + i, mask=mask, other=0.0).to(tl.float32)
        base = qkv_ptr + t * stride_t + h * D
        x1 = tl.load(base + i, mask=mask, other=0.0).to(tl.float32)
        x2 = tl.load(base + HALF + i, mask=mask, other=0.0).to(tl.float32)
        o1 = x1 * c - x2 * s
        o2 = x2 * c + x1 * s
        if h < H:
            dst = q_out_ptr + (t * H + h) * D
            tl.store(dst + i, o1.to(q_out_ptr.dtype.element_ty), mask=mask)
            tl.store(dst + HALF + i, o2.to(q_out_ptr.dtype.element_ty), mask=mask)
        else:
            kh = h - H
            slot = tl.load(slot_ptr + t * stride_slot).to(tl.int64)
            dst = k_out_ptr + (t * KV + kh) * D
            tl.store(dst + i, o1.to(k_out_ptr.dtype.element_ty), mask=mask)
            tl.store(dst + HALF + i, o2.to(k_out_ptr.dtype.element_ty), mask=mask)
            cdst = k_cache_ptr + (slot * KV + kh) * D
            tl.store(cdst + i, o1.to(k_cache_ptr.dtype.element_ty), mask=mask)
            tl.store(cdst + HALF + i, o2.to(k_cache_ptr.dtype.element_ty), mask=mask)
            vsrc = qkv_ptr + t * stride_t + (H + KV + kh) * D
            vdst = v_cache_ptr + (slot * KV + kh) * D
            tl.store(vdst + i, tl.load(vsrc + i, mask=mask), mask=mask)
            tl.store(vdst + HALF + i, tl.load(vsrc + HALF + i, mask=mask), mask=mask)

    @triton.jit
    def _silu_mul_kernel(gu_ptr, out_ptr, n, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        mask = cols < n
        g = tl.load(gu_ptr + row * 2 * n + cols, mask=mask, other=0.0).to(tl.float32)
        u = tl.load(gu_ptr + row * 2 * n + n + cols, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + row * n + cols, (g / (1.0 + tl.exp(-g)) * u).to(out_ptr.dtype.element_ty), mask=mask)


    @triton.jit
    def _argmax_chunks_kernel(x_ptr, val_ptr, idx_ptr, n, stride_x, NCH, BLOCK: tl.constexpr, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        row = tl.program_id(0).to(tl.int64)
        c = tl.program_id(1)
        cols = c * BLOCK + tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * stride_x + cols, mask=cols < n, other=float("-inf")).to(tl.float32)
        m, i = tl.max(x, 0, return_indices=True, return_indices_tie_break_left=True)
        tl.store(val_ptr + row * NCH + c, m)
        tl.store(idx_ptr + row * NCH + c, (c * BLOCK + i).to(tl.int64))

    @triton.jit
    def _argmax_final_kernel(val_ptr, idx_ptr, out_ptr, NCH, buf_ptr, stride_buf, ring_ptr, stride_ring, on_ptr,
                             block_size, max_blocks, NCH_P: tl.constexpr, STEP: tl.constexpr = False,
                             TABLE: tl.constexpr = 6, PDL: tl.constexpr = False):
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        row = tl.program_id(0).to(tl.int64)
        j = tl.arange(0, NCH_P)
        v = tl.load(val_ptr + row * NCH + j, mask=j < NCH, other=float("-inf"))
        _, best = tl.max(v, 0, return_indices=True, return_indices_tie_break_left=True)
        tok = tl.load(idx_ptr + row * NCH + best)
        tl.store(out_ptr + row, tok)
        if STEP:  # a decode graph's last kernel: hand the token to the host, set up the row's next step (StepInputs)
            b = buf_ptr + row * stride_buf
            if tl.load(on_ptr) != 0:
                par = tl.load(b + 5)
                tl.store(ring_ptr + par * stride_ring + row, tok)
                tl.store(b + 5, 1 - par)
                if tl.load(b + 4) != -2:  # padding rows keep writing to the scratch block
                    pos = tl.load(b + 1) + 1
                    blk = tl.minimum(pos // block_size, max_blocks - 1)  # a block not allocated yet: the host copies
                    tl.store(b + 1, pos)
                    tl.store(b + 2, tl.load(b + TABLE + blk) * block_size + pos % block_size)
                    tl.store(b + 3, pos + 1)
                    tl.store(b + 4, row)


ARGMAX_BLOCK = 4096
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"  # Triton's CPU interpreter runs argmax_rows' kernels on CPU


class StepInputs(NamedTuple):
    """A decode graph's input rows, advanced on the device by the step's last kernel so that the next step needs
    no host-to-device copy while its batch only moves forward (serve.model_runner.DecodeGraphs).

    `buf` [B, TABLE + blocks] long: token, position, slot, context length, source row (-2: padding), ring parity,
    block table. While `on[0]` != 0 each row's greedy token also goes to `ring[parity, row]` (pinned host memory the
    kernel writes directly: no device-to-host copy on the stream), the parity flips, and a live row moves to the
    next position: slot from its block table, context + 1, its input token from this step's output row."""

    buf: torch.Tensor
    ring: torch.Tensor  # [2, B] long, pinned
    on: torch.Tensor  # [1] int32 on the device
    block_size: int
    table_col: int


def argmax_rows(x: torch.Tensor, out: torch.Tensor | None = None, step: StepInputs | None = None) -> torch.Tensor:
    """x [B, V] -> [B] long (into `out` if given), the first index of each row's maximum (as torch.argmax).
    No host sync. `step` (CUDA): also advance a decode graph's inputs (StepInputs)."""
    if triton is None or (x.device.type != "cuda" and not INTERPRET) or x.shape[0] == 0 or x.stride(-1) != 1:
        if step is not None:
            raise ValueError("StepInputs needs the Triton kernel (CUDA)")
        if out is None:
            return x.argmax(-1)
        return out.copy_(x.argmax(-1))
    b, n = x.shape
    nch = triton.cdiv(n, ARGMAX_BLOCK)
    vals = torch.empty(b, nch, dtype=torch.float32, device=x.device)
    idx = torch.empty(b, nch, dtype=torch.long, device=x.device)
    if out is None:
        out = torch.empty(b, dtype=torch.long, device=x.device)
    _argmax_chunks_kernel[(b, nch)](x, vals, idx, n, x.stride(0), nch, BLOCK=ARGMAX_BLOCK, num_warps=8, **pdl.launch())
    nch_p = max(16, triton.next_power_of_2(nch))
    if step is None:
        _argmax_final_kernel[(b,)](vals, idx, out, nch, out, 0, out, 0, out, 1, 1, NCH_P=nch_p, num_warps=1,
                                   **pdl.launch())
    else:
        buf = step.buf
        _argmax_final_kernel[(b,)](vals, idx, out, nch, buf, buf.stride(0), step.ring, step.ring.stride(0), step.on,
                                   step.block_size, buf.shape[1] - step.table_col, NCH_P=nch_p, STEP=True,
                                   TABLE=step.table_col, num_warps=1, **pdl.launch())
    return out


def add_rmsnorm(x: torch.Tensor, residual: torch.Tensor | None, weight: torch.Tensor, eps: float,
                out: torch.Tensor | None = None, res_out: torch.Tensor | None = None) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (rmsnorm(x + residual) * weight, x + residual). x, residual: [T, n] contiguous. `out`/`res_out`
    (optional, contiguous) receive the results; `res_out` may be `residual` itself (each row is read, then written)."""
    t, n = x.shape
    out = torch.empty_like(x) if out is None else out
    res_out = torch.empty_like(x) if res_out is None else res_out
    _add_rmsnorm_kernel[(t,)](x, residual if residual is not None else x, weight, out, res_out, n, eps,
                              HAS_RES=residual is not None, BLOCK=triton.next_power_of_2(n), num_warps=8, **pdl.launch())
    return out, res_out


def rope_and_cache(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, positions: torch.Tensor,
                   slots: torch.Tensor, k_cache: torch.Tensor, v_cache: torch.Tensor, heads: int, kv_heads: int,
                   head_dim: int, q_out: torch.Tensor | None = None, k_out: torch.Tensor | None = None) \
        -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """qkv [T, (heads + 2 kv_heads) * d] -> rotated q [T, heads, d], rotated k and v [T, kv_heads, d] (v a view of
    qkv); k and v are also written to the cache at `slots`. cos/sin are the full tables, indexed by `positions`.
    `q_out`/`k_out` (optional, contiguous) receive q and k."""
    t = qkv.shape[0]
    q = torch.empty(t, heads, head_dim, dtype=qkv.dtype, device=qkv.device) if q_out is None else q_out
    k = torch.empty(t, kv_heads, head_dim, dtype=qkv.dtype, device=qkv.device) if k_out is None else k_out
    half = head_dim // 2
    _rope_cache_kernel[(t, heads + kv_heads)](
        qkv, cos, sin, positions, slots, q, k, k_cache, v_cache, qkv.stride(0), cos.stride(0),
        positions.stride(0), slots.stride(0),
        H=heads, KV=kv_heads, D=head_dim, HALF=half, HALF_P=triton.next_power_of_2(half), num_warps=1, **pdl.launch())
    v = qkv[:, (heads + kv_heads) * head_dim:].view(t, kv_heads, head_dim)
    return q, k, v


def silu_mul(gu: torch.Tensor) -> torch.Tensor:
    t, n2 = gu.shape
    n = n2 // 2
    out = torch.empty(t, n, dtype=gu.dtype, device=gu.device)
    block = 1024
    _silu_mul_kernel[(t, triton.cdiv(n, block))](gu, out, n, BLOCK=block, num_warps=4, **pdl.launch())
    return out
