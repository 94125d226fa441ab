"""Batch-1 decode with Triton GEMVs: fewer, fuller kernels than cuBLAS + element-wise launches.

At batch 1 every projection is a pure weight stream and each small kernel launch in the graph costs ~1.5 us.
Measured on an H100 (bench/compress/gemm_probe.py): cuBLAS runs the 1B model's down projection as split-K plus a
reduction kernel, o_proj at ~1.35 TB/s, and lm_head's bf16 logits need a separate fp32 cast. Here:
- `gemv`: y = x @ W.T, each program owns `block_n` rows and streams them `block_k` columns at a time (fp32
  accumulation), output in any dtype (lm_head writes fp32 logits directly);
- a SwiGLU epilogue for gate_up: each program owns matching gate and up rows and writes silu(gate) * up (no
  SwiGLU kernel, and down reads the activation as any input);
- an add+RMSNorm epilogue: the last program to finish (an atomic ticket) adds the residual and normalizes the
  whole row, which removes the separate add_rmsnorm launch after o_proj and after down;
- a RoPE epilogue for qkv: the last program rotates q and k and writes k/v into the paged cache;
- the embedding lookup (token picked on the GPU) fused with the first RMSNorm.
The kernel also reads quantized weights as stored and dequantizes them in registers: int8 (`Int8Linear`, one
scale per output channel) and packed int4 (`Int4Linear`, per-group scale and offset), with the same
epilogues, so a quantized model's batch-1 step has the same few launches (its own step runs tinygemm or the int8
GEMV per projection plus the separate add+RMSNorm / RoPE / SwiGLU kernels). Any mix works: int4 layers with an
int8 or 16-bit lm_head. Measured on an H200, the int4 tiles stream ~1.1 TB/s (about six ALU ops per weight) and
lose to tinygemm, so tuning keeps tinygemm there; int8 wins on qkv, o_proj and down
(bench/results/quant_engine_notes.md).
`forward_bs1` is the whole decoder step at batch 1 built from these. `tune_tiles` times each projection's
candidates (the model's own kernel included: cuBLAS, tinygemm, with the separate kernels) on the real weights;
DecodeGraphs captures the step with them next to the model's own graph, checks the logits agree and keeps
whichever replays faster on the device at hand (LMSMITH_DECODE_GEMV=0 keeps the model's own step).
"""

from __future__ import annotations

import os

import torch
from torch import nn

from lmsmith.quant import Int4Linear, Int8Linear
from lmsmith.quant.planar import INT4_PLANES, INT8_PLANES, pack_int4_planar, pack_int8_planar, plane_width
from lmsmith.serve import fused as F2
from lmsmith.serve import pdl
from lmsmith.serve.attention import paged_attention
from lmsmith.serve.paged_decode import available, decode_attention, one_launch_decode_attention, paged_decode, triton
from lmsmith.serve.pdl import gdc_launch_dependents, gdc_wait  # noqa: F401 - used in the kernels

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _magic_f32(v):
        """int32 v in [0, 2**23) -> the float32 2**23 + v, exactly: v goes into the mantissa of 2**23 (one logic
        op; the caller subtracts 2**23). The int-to-float instruction runs at a quarter of the FP32 rate, which
        would cap int4 weights at about half the memory bandwidth."""
        return (v | 0x4B000000).to(tl.float32, bitcast=True)

    @triton.jit
    def _plane4(w, I: tl.constexpr, ONE):
        """Plane I of planar int4 words as 1 + q * 2**(pos - 23) (planar.INT4_FIELDS: one shift per three planes,
        then one AND-OR)."""
        if I < 3:
            src = w << 3
        elif I < 6:
            src = w >> 9
        else:
            src = w << 11
        return ((src & (15 << (11 + 4 * (I % 3)))) | ONE).to(tl.float32, bitcast=True)

    @triton.jit
    def _ab_pair(p):
        """The affine pair (A, B) of one plane of planar int4 rows: float32 bit patterns packed in the int64s at
        `p` (A low, B high), w = A * f + B for the plane's field read as f = 1 + q * 2**(pos - 23)."""
        ab = tl.load(p)
        return ab.to(tl.int32).to(tl.float32, bitcast=True), (ab >> 32).to(tl.int32).to(tl.float32, bitcast=True)

    @triton.jit
    def _x_tile(x_ptr, nw_ptr, cols, cmask, rstd, NORM_IN: tl.constexpr):
        """A tile of the GEMV's input as float32; NORM_IN: RMSNorm(x) * nw with the 16-bit roundings of
        fused._add_rmsnorm_kernel (x * rstd rounded, then the product with the weight rounded)."""
        x = tl.load(x_ptr + cols, mask=cmask, other=0.0)
        if NORM_IN:
            xn = (x.to(tl.float32) * rstd).to(x.dtype)
            x = (tl.load(nw_ptr + cols, mask=cmask, other=0.0).to(tl.float32) * xn.to(tl.float32)).to(x.dtype)
        return x.to(tl.float32)

    @triton.jit
    def _gemv_kernel(x_ptr, w_ptr, s_ptr, m_ptr, y_ptr, N, K, stride_w,
                     res_ptr, nw_ptr, h_ptr, res_out_ptr, cnt_ptr, eps,
                     cos_ptr, sin_ptr, pos_ptr, slot_ptr, q_ptr, kc_ptr, vc_ptr, stride_cos, ws_ptr, rb_ptr, one_ptr,
                     WQ: tl.constexpr, GROUP: tl.constexpr, SUB: tl.constexpr,
                     KW: tl.constexpr, VEC: tl.constexpr, SPLIT: tl.constexpr,
                     GLU: tl.constexpr, NORM: tl.constexpr, NORM_BLOCK: tl.constexpr,
                     ROPE: tl.constexpr, H: tl.constexpr, KV: tl.constexpr, D: tl.constexpr, HALF: tl.constexpr,
                     HALF_P: tl.constexpr, HP: tl.constexpr, VP: tl.constexpr,
                     BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, PDL: tl.constexpr = False,
                     NORM_IN: tl.constexpr = False, ADD: tl.constexpr = False):
        """WQ selects how the weight is stored: 0 a 16-bit [N, K] matrix; 8 int8 [N, K] (read as uint8) times
        s[N]; 4 packed int4 [N, K/2] (element 2j in the low nibble of byte j) with w = q * s + m per group of
        GROUP inputs (s, m float32 [N, K/GROUP]). int4 tiles are [BLOCK_N, BLOCK_K / SUB, SUB] with SUB =
        min(BLOCK_K, GROUP): each sub-block lies in one group, so the scale and offset apply once per sub-block
        to sum(q * x) and sum(x) instead of once per weight.
        WQ 5 / 6 / 7 / 9: the planar int32 layouts of `lmsmith.quant.planar` (int4 with A/B pairs in s_ptr as
        int64; int8 offset-binary with s[N]), KW words per plane, one AND-OR + FMA per weight. int4 comes in three
        shapes: 6 tiles [ROWS, KW] and dequantizes every weight with one more FMA (w = A * f + B); 7 splits each
        thread's 4 columns apart and sums their products in one FMA chain before the affine pair; 5 does the
        same through tl.sum over [ROWS, KW / VEC, VEC] (which Triton does not contract into FMAs).
        SPLIT > 1 (planar only): grid (row blocks, SPLIT), program (r, j) reduces the j-th slice of the row's tiles
        into ws[j] (float32 [SPLIT, rows]); the last of a row block's programs (ticket rb[r]) sums the slices and
        runs the rest (SwiGLU, store, RoPE / add+RMSNorm tickets), so narrow matrices (N = 2048) fill the GPU.
        GLU: the weight is [gate; up] (2N rows) and y = silu(gate) * up: a program reads gate row r and up row
        N + r side by side (interleaved in its tile), so the SwiGLU costs no launch and no re-computation.
        NORM_IN (16-bit / int8 stored layouts): x is the residual stream; every program computes its RMS itself and
        reads x as RMSNorm(x) * nw, rounded as the separate kernel rounds. ADD: res_out = y + res, each program its
        own rows. Together they replace the add+RMSNorm ticket, whose last program is a serial tail on every step."""
        EARLY_W: tl.constexpr = WQ == 0 or WQ == 8  # the 16-bit / int8 path loads its first weight tile early
        if PDL and not EARLY_W:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        pid = tl.program_id(0)
        if GLU:
            ROWS: tl.constexpr = 2 * BLOCK_N
            rr = tl.arange(0, ROWS)
            rows = pid * BLOCK_N + rr // 2
            rmask = rows < N
            wrows = rows + (rr % 2) * N
        else:
            ROWS: tl.constexpr = BLOCK_N
            rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
            rmask = rows < N
            wrows = rows
        wrow = w_ptr + wrows.to(tl.int64) * stride_w
        if WQ == 5 or WQ == 6 or WQ == 7 or WQ == 9:
            PL: tl.constexpr = 4 if WQ == 9 else 8
            TPS = K // (PL * KW * SPLIT)  # tiles per program
            # rows past N read row 0 (never stored): no masks, so no predicated loads in the loop
            srows = tl.where(rmask, wrows, 0).to(tl.int64)
            wrow = w_ptr + srows * stride_w
            abrow = s_ptr + srows * (K // KW)
            t0 = tl.program_id(1) * TPS
            # the bits of 1.0f, loaded rather than a literal: the AND-OR's second constant then stays in a register
            # (as two literals, ptxas re-materializes one with a MOV before every AND-OR: +0.6 instructions a weight)
            ONE = tl.load(one_ptr)
            if WQ == 5:  # [ROWS, KW / VEC, VEC] tiles: the affine pair applies once per VEC weights of a thread
                C: tl.constexpr = KW // VEC
                woff = tl.arange(0, C)[:, None] * VEC + tl.arange(0, VEC)[None, :]  # [C, VEC] words of a plane
                wp = wrow[:, None, None] + woff[None, :, :]  # [ROWS, C, VEC]
                acc = tl.zeros([ROWS, C], tl.float32)
                for t in range(t0, t0 + TPS):
                    w = tl.load(wp + t * KW)
                    xb = x_ptr + t * (PL * KW) + woff
                    for i in tl.static_range(8):
                        f = _plane4(w, i, ONE)
                        xi = tl.load(xb + i * KW).to(tl.float32)  # [C, VEC]
                        a, b = _ab_pair(abrow + t * 8 + i)
                        acc += tl.sum(f * xi[None, :, :], 2) * a[:, None] + b[:, None] * tl.sum(xi, 1)[None, :]
                y = tl.sum(acc, 1)
            elif WQ == 7:  # [ROWS, KW / 4, 4] tiles split into 4 in-thread columns: explicit FMA chains per thread
                C4: tl.constexpr = KW // 4
                woff = tl.arange(0, C4)[:, None] * 4 + tl.arange(0, 4)[None, :]  # [C4, 4]
                wp = wrow[:, None, None] + woff[None, :, :]
                acc = tl.zeros([ROWS, C4], tl.float32)
                for t in range(t0, t0 + TPS):
                    wa, wb = tl.split(tl.reshape(tl.load(wp + t * KW), (ROWS, C4, 2, 2)))
                    w0, w2 = tl.split(wa)
                    w1, w3 = tl.split(wb)
                    xb = x_ptr + t * (PL * KW) + woff
                    for i in tl.static_range(8):
                        xa, xc = tl.split(tl.reshape(tl.load(xb + i * KW), (C4, 2, 2)))
                        x0, x2 = tl.split(xa)
                        x1, x3 = tl.split(xc)
                        x0 = x0.to(tl.float32)
                        x1 = x1.to(tl.float32)
                        x2 = x2.to(tl.float32)
                        x3 = x3.to(tl.float32)
                        part = _plane4(w0, i, ONE) * x0[None, :]
                        part += _plane4(w1, i, ONE) * x1[None, :]
                        part += _plane4(w2, i, ONE) * x2[None, :]
                        part += _plane4(w3, i, ONE) * x3[None, :]
                        a, b = _ab_pair(abrow + t * 8 + i)
                        # two FMAs into the accumulator (written as a + b * c Triton emits FMUL, FFMA and FADD)
                        acc = tl.fma(part, a[:, None], acc)
                        acc = tl.fma(b[:, None], ((x0 + x1) + (x2 + x3))[None, :], acc)
                y = tl.sum(acc, 1)
            else:  # flat [ROWS, KW] tiles, x broadcast along rows (the layout of the 16-bit path)
                cols = tl.arange(0, KW)
                wp = wrow[:, None] + cols[None, :]
                if WQ == 6:  # w = A * f + B per weight (one FMA, exact up to its rounding), then the FMA with x
                    acc = tl.zeros([ROWS, KW], tl.float32)
                    for t in range(t0, t0 + TPS):
                        w = tl.load(wp + t * KW)
                        xb = x_ptr + t * (PL * KW) + cols
                        for i in tl.static_range(8):
                            f = _plane4(w, i, ONE)
                            xi = tl.load(xb + i * KW).to(tl.float32)
                            a, b = _ab_pair(abrow + t * 8 + i)
                            acc += (f * a[:, None] + b[:, None]) * xi[None, :]
                    y = tl.sum(acc, 1)
                else:  # int8: per-row scale, so the planes' sums stay apart until the end
                    acc7 = tl.zeros([ROWS, KW], tl.float32)
                    acc15 = tl.zeros([ROWS, KW], tl.float32)
                    xs7 = tl.zeros([KW], tl.float32)
                    xs15 = tl.zeros([KW], tl.float32)
                    for t in range(t0, t0 + TPS):
                        w = tl.load(wp + t * KW)
                        lo = w << 7
                        hi = w >> 9
                        xb = x_ptr + t * (PL * KW) + cols
                        x0 = tl.load(xb).to(tl.float32)
                        x1 = tl.load(xb + KW).to(tl.float32)
                        x2 = tl.load(xb + 2 * KW).to(tl.float32)
                        x3 = tl.load(xb + 3 * KW).to(tl.float32)
                        acc7 += ((lo & (255 << 7)) | ONE).to(tl.float32, bitcast=True) * x0[None, :]
                        acc15 += ((lo & (255 << 15)) | ONE).to(tl.float32, bitcast=True) * x1[None, :]
                        acc7 += ((hi & (255 << 7)) | ONE).to(tl.float32, bitcast=True) * x2[None, :]
                        acc15 += ((hi & (255 << 15)) | ONE).to(tl.float32, bitcast=True) * x3[None, :]
                        xs7 += x0 + x2
                        xs15 += x1 + x3
                    # f = 1 + u * 2**(pos - 23), u = b + 128: sum b x = 2**(23 - pos) (sum f x - sum x) - 128 sum x
                    y = (tl.sum(acc7 - xs7[None, :], 1) * 65536.0 + tl.sum(acc15 - xs15[None, :], 1) * 256.0
                         - 128.0 * (tl.sum(xs7, 0) + tl.sum(xs15, 0)))
                    if SPLIT == 1:
                        y = y * tl.load(s_ptr + wrows, mask=rmask, other=0.0)
        elif WQ == 4:
            R: tl.constexpr = BLOCK_K // SUB
            G = K // GROUP
            sub = tl.arange(0, R)
            acc4 = tl.zeros([ROWS, R], tl.float32)
            for b0 in range(0, K // 2, BLOCK_K // 2):  # bytes, so the loads' alignment stays visible
                kk = 2 * b0 + sub * SUB  # first column of each sub-block
                live = kk < K  # K is a multiple of GROUP, hence of SUB: a sub-block is all in or all out
                x = tl.load(x_ptr + kk[:, None] + tl.arange(0, SUB)[None, :], mask=live[:, None],
                            other=0.0).to(tl.float32)  # [R, SUB]
                p = tl.load(wrow[:, None, None] + (b0 + sub * (SUB // 2))[None, :, None]
                            + tl.arange(0, SUB // 2)[None, None, :],
                            mask=rmask[:, None, None] & live[None, :, None], other=0).to(tl.int32)
                q = tl.interleave(_magic_f32(p & 15) - 8388608.0, _magic_f32(p >> 4) - 8388608.0)
                sm = rmask[:, None] & live[None, :]
                gi = wrows[:, None] * G + (kk // GROUP)[None, :]
                s = tl.load(s_ptr + gi, mask=sm, other=0.0)
                m = tl.load(m_ptr + gi, mask=sm, other=0.0)
                acc4 += tl.sum(q * x[None, :, :], 2) * s + m * tl.sum(x, 1)[None, :]
            y = tl.sum(acc4, 1)
        else:
            # the first weight tile is read before waiting for the previous kernel (weights are never written):
            # under PDL it streams in while that kernel finishes
            cols = tl.arange(0, BLOCK_K)
            cmask = cols < K
            w = tl.load(wrow[:, None] + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0)
            if PDL:
                gdc_wait()
                gdc_launch_dependents()
            rstd = 1.0
            if NORM_IN:  # this program's own pass over the (few KB of) x for its mean square
                ss = tl.zeros([BLOCK_K], tl.float32)
                for k0 in range(0, K, BLOCK_K):
                    c = k0 + tl.arange(0, BLOCK_K)
                    xr = tl.load(x_ptr + c, mask=c < K, other=0.0).to(tl.float32)
                    ss += xr * xr
                rstd = tl.rsqrt(tl.sum(ss, 0) / K + eps)
            x = _x_tile(x_ptr, nw_ptr, cols, cmask, rstd, NORM_IN)
            if WQ == 8:
                w = _magic_f32(w.to(tl.int32) ^ 0x80) - 8388736.0
            acc = w.to(tl.float32) * x[None, :]
            for k0 in range(BLOCK_K, K, BLOCK_K):
                cols = k0 + tl.arange(0, BLOCK_K)
                cmask = cols < K
                x = _x_tile(x_ptr, nw_ptr, cols, cmask, rstd, NORM_IN)
                w = tl.load(wrow[:, None] + cols[None, :], mask=rmask[:, None] & cmask[None, :], other=0)
                if WQ == 8:  # int8 bits as offset binary (value + 128): masked zeros come out as 0 as well
                    w = _magic_f32(w.to(tl.int32) ^ 0x80) - 8388736.0
                acc += w.to(tl.float32) * x[None, :]
            y = tl.sum(acc, 1)
            if WQ == 8:
                y = y * tl.load(s_ptr + wrows, mask=rmask, other=0.0)
        go = tl.program_id(1) == 0  # SPLIT == 1: every program finishes its rows
        if SPLIT > 1:
            NWR = N * 2 if GLU else N  # weight rows
            tl.store(ws_ptr + tl.program_id(1) * NWR + wrows, y, mask=rmask)
            tl.debug_barrier()
            tk = tl.atomic_add(rb_ptr + pid, 1, sem="acq_rel")
            go = tk == SPLIT - 1
            part = tl.load(ws_ptr + tl.arange(0, SPLIT)[:, None] * NWR + wrows[None, :],
                           mask=tl.where(go, rmask, False)[None, :], other=0.0, cache_modifier=".cg")
            y = tl.sum(part, 0)
            if WQ == 9:
                y = y * tl.load(s_ptr + wrows, mask=rmask, other=0.0)
            if go:
                tl.atomic_xchg(rb_ptr + pid, 0)
        if GLU:  # gate and up rounded to the activation dtype first, as the model's own gate_up + SwiGLU kernels do
            g, u = tl.split(tl.reshape(y.to(x_ptr.dtype.element_ty).to(tl.float32), (BLOCK_N, 2)))
            y = g / (1.0 + tl.exp(-g)) * u
            rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
            rmask = rows < N
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=tl.where(go, rmask, False))  # (where, not &: Triton's interpreter)
        if ADD:  # the residual add, rounded as the model's (16-bit y + 16-bit residual)
            r = tl.load(res_ptr + rows, mask=tl.where(go, rmask, False), other=0.0)
            tl.store(res_out_ptr + rows, y.to(y_ptr.dtype.element_ty) + r, mask=tl.where(go, rmask, False))
        if ROPE:  # y = q|k|v of one token: the last program applies RoPE and writes K/V into the paged cache
            tl.debug_barrier()  # every thread's stores are issued before the ticket releases them
            ticket = tl.atomic_add(cnt_ptr, go.to(tl.int32), sem="acq_rel")  # split-K: finishing programs only
            if (ticket == tl.num_programs(0) - 1) & go:
                hh = tl.arange(0, HP)
                i = tl.arange(0, HALF_P)
                im = i < HALF
                m2 = (hh < H + KV)[:, None] & im[None, :]
                pos = tl.load(pos_ptr).to(tl.int64)
                slot = tl.load(slot_ptr).to(tl.int64)
                c = tl.load(cos_ptr + pos * stride_cos + i, mask=im, other=0.0).to(tl.float32)[None, :]
                sn = tl.load(sin_ptr + pos * stride_cos + i, mask=im, other=0.0).to(tl.float32)[None, :]
                src = y_ptr + hh[:, None] * D + i[None, :]
                x1 = tl.load(src, mask=m2, other=0.0, cache_modifier=".cg").to(tl.float32)
                x2 = tl.load(src + HALF, mask=m2, other=0.0, cache_modifier=".cg").to(tl.float32)
                o1 = x1 * c - x2 * sn
                o2 = x2 * c + x1 * sn
                isq = (hh < H)[:, None]
                isk = (hh >= H)[:, None]
                qd = q_ptr + hh[:, None] * D + i[None, :]
                tl.store(qd, o1.to(q_ptr.dtype.element_ty), mask=m2 & isq)
                tl.store(qd + HALF, o2.to(q_ptr.dtype.element_ty), mask=m2 & isq)
                kd = kc_ptr + (slot * KV + (hh - H))[:, None] * D + i[None, :]
                tl.store(kd, o1.to(kc_ptr.dtype.element_ty), mask=m2 & isk)
                tl.store(kd + HALF, o2.to(kc_ptr.dtype.element_ty), mask=m2 & isk)
                j = tl.arange(0, VP)
                vm = j < KV * D
                v = tl.load(y_ptr + (H + KV) * D + j, mask=vm, other=0.0, cache_modifier=".cg")
                tl.store(vc_ptr + slot * KV * D + j, v, mask=vm)
                tl.atomic_xchg(cnt_ptr, 0)
        if NORM:
            tl.debug_barrier()
            ticket = tl.atomic_add(cnt_ptr, go.to(tl.int32), sem="acq_rel")
            if (ticket == tl.num_programs(0) - 1) & go:  # the last program: residual add + RMSNorm of the whole row
                c = tl.arange(0, NORM_BLOCK)
                m = c < N
                a = tl.load(y_ptr + c, mask=m, other=0.0, cache_modifier=".cg")
                s = a + tl.load(res_ptr + c, mask=m, other=0.0)
                tl.store(res_out_ptr + c, s, mask=m)
                hf = s.to(tl.float32)
                var = tl.sum(hf * hf, 0) / N
                hn = (hf * tl.rsqrt(var + eps)).to(s.dtype)
                nw = tl.load(nw_ptr + c, mask=m, other=0.0)
                tl.store(h_ptr + c, (nw * hn).to(h_ptr.dtype.element_ty), mask=m)
                tl.atomic_xchg(cnt_ptr, 0)  # ready for the next launch (kernels on a stream never overlap)


    @triton.jit
    def _embed_norm_kernel(buf_ptr, stride_buf, tokens_ptr, emb_ptr, stride_emb, nw_ptr, h_ptr, x_ptr, n, eps,
                           BLOCK: tl.constexpr, PDL: tl.constexpr = False):
        """Row r: token = tokens[src] if src >= 0 else the host's token (buf columns 0 and 4); x = its
        embedding, h = RMSNorm(x) * w (as _add_rmsnorm_kernel without a residual)."""
        if PDL:  # wait for the previous kernel's writes, then let the next one launch
            gdc_wait()
            gdc_launch_dependents()
        r = tl.program_id(0).to(tl.int64)
        src = tl.load(buf_ptr + r * stride_buf + 4)
        tok = tl.load(buf_ptr + r * stride_buf)
        if src >= 0:
            tok = tl.load(tokens_ptr + src)
        c = tl.arange(0, BLOCK)
        m = c < n
        x = tl.load(emb_ptr + tok * stride_emb + c, mask=m, other=0.0)
        tl.store(x_ptr + r * n + c, x, mask=m)
        hf = x.to(tl.float32)
        var = tl.sum(hf * hf, 0) / n
        hn = (hf * tl.rsqrt(var + eps)).to(x.dtype)
        w = tl.load(nw_ptr + c, mask=m, other=0.0)
        tl.store(h_ptr + r * n + c, (w * hn).to(h_ptr.dtype.element_ty), mask=m)


def embed_norm(buf: torch.Tensor, tokens: torch.Tensor, emb: torch.Tensor, norm_w: torch.Tensor, eps: float) \
        -> tuple[torch.Tensor, torch.Tensor]:
    """DecodeGraphs' input rows -> (RMSNorm(embedding) * w, embedding), picking each row's token on the GPU."""
    b, n = buf.shape[0], emb.shape[1]
    x = torch.empty(b, n, dtype=emb.dtype, device=emb.device)
    h = torch.empty_like(x)
    _embed_norm_kernel[(b,)](buf, buf.stride(0), tokens, emb, emb.stride(0), norm_w, h, x, n, eps,
                             BLOCK=triton.next_power_of_2(n), num_warps=4, **pdl.launch())
    return h, x


DEFAULT_TILES = {"o_proj": (4, 1024), "down": (4, 1024), "lm_head": (4, 1024)}  # (rows, columns[, warps])
# a tile for each projection whose tuned choice was its own kernel, where a plan needs every projection on a GEMV
DENSE_FALLBACK = {"qkv": (4, 1024, 4), "gate_up": (1, 2048, 4), "o_proj": (4, 2048, 8), "down": (4, 2048, 8),
                  "lm_head": (1, 2048, 4)}
CANDIDATE_TILES = {  # per weight kind (rows, columns, warps); the model's own kernel is always timed too
    "dense": {
        "qkv": [(4, 1024, 4), (1, 2048, 4), (2, 2048, 4)],
        "gate_up": [(1, 1024, 2), (1, 2048, 4), (2, 1024, 4), (2, 2048, 8)],  # output rows: a gate and an up row each
        "o_proj": [(2, 2048, 4), (2, 1024, 2), (4, 2048, 8), (1, 2048, 4)],
        "down": [(2, 2048, 4), (4, 2048, 8), (1, 2048, 4)],
        "lm_head": [(1, 2048, 4), (2, 1024, 2), (4, 1024, 4)],
    },
    # a quarter (int4) or half (int8) of a 16-bit row's bytes: more columns per program for the same 16-32 bytes
    # per thread and load (the winners of each projection on an H200, bench/results/quant_engine-h200.json)
    "int4": {"*": [(4, 1024, 4), (8, 1024, 4), (8, 2048, 8)]},
    "int8": {"*": [(2, 1024, 4), (4, 1024, 4), (4, 2048, 8)]},
}
WQ_CODES = {"dense": 0, "int8": 8, "int4": 4, "int4p": 5, "int4f": 6, "int4s": 7, "int8p": 9}  # the kernel's WQ switch
# the planar layouts (rows, "F" | "S" | "P", warps, split): one warp per program, so x's load has the layout of
# the weight tile's columns (with more warps Triton loads x one element per thread and re-lays it out through
# shared memory before every plane). A thread reads 16 bytes of each of its rows per 512-byte plane tile.
# int4 "S": each thread's 4 columns summed in one FMA chain, then two FMAs for the affine pair (3.7 SASS
# instructions a weight in the loop at 8 rows, sm_90, Triton 3.9: bench/results/gemv_sass-sm90.json); "F": w = A f
# + B per weight, then the FMA with x (4.1); "P": the sum via tl.sum (4.3). int8 has one kernel (3.0 a weight): its
# tiles use "P". Round 1's stored-layout kernels: int4 7.4, int8 5.9. Split-K (programs per row block) where N = 2048 leaves the
# GPU half idle. Per projection of the Llama-3.2-1B shape (output rows; gate_up's programs read twice as many):
PLANAR_TILES = {
    "qkv": [(8, "S", 1, 1), (4, "S", 1, 1), (8, "F", 1, 1), (8, "S", 1, 2)],
    "gate_up": [(4, "S", 1, 1), (2, "S", 1, 1), (4, "F", 1, 1), (8, "S", 1, 1)],  # output rows: x2 weight rows
    # o_proj / down end in the add+RMSNorm epilogue, run by the last program: one warp makes that tail slower,
    # so a 4-warp tile competes
    "o_proj": [(8, "S", 1, 1), (4, "S", 1, 1), (8, "S", 1, 2), (8, "F", 1, 2), (8, "F", 4, 2)],
    "down": [(8, "S", 1, 2), (8, "S", 1, 4), (4, "S", 1, 4), (8, "F", 1, 4), (8, "F", 4, 4)],
    "lm_head": [(8, "P", 1, 1), (16, "P", 1, 1), (4, "P", 1, 1), (16, "P", 2, 1)],
}


def planar_tiles(name: str, kind: str) -> list[tuple]:
    """The planar candidates of a projection for int4 or int8 weights (int8 has one kernel: no duplicates)."""
    tiles = PLANAR_TILES.get(name, PLANAR_TILES["lm_head"])
    if kind == "int4":
        return list(tiles)
    return list(dict.fromkeys((t[0], "P", *t[2:]) for t in tiles))


def planar_enabled() -> bool:
    """LMSMITH_GEMV_PLANAR=0 keeps the int4/int8 GEMV on the stored layouts (round 1's kernel: benchmarks)."""
    return os.environ.get("LMSMITH_GEMV_PLANAR", "1") != "0"


def weight_kind(w) -> str | None:
    """How the GEMV kernel reads a projection (a weight tensor or a linear module): "dense" (16-bit), "int8",
    "int4" (as stored, dequantized in registers), or None where it cannot (fp8, fp32, a bias)."""
    if isinstance(w, torch.Tensor):
        return "dense" if w.dtype in (torch.bfloat16, torch.float16) and w.is_contiguous() else None
    if w is None or getattr(w, "bias", None) is not None:
        return None
    if type(w) is nn.Linear:
        return weight_kind(w.weight)
    if isinstance(w, (Int4Linear, Int8Linear)) and w.qweight.is_contiguous():
        return w.method
    return None


def _shape(w) -> tuple[int, int]:
    return tuple(w.shape) if isinstance(w, torch.Tensor) else (w.out_features, w.in_features)


def planar_operands(w, dtype: torch.dtype) -> dict[str, torch.Tensor] | None:
    """The planar int32 layout of an Int4Linear / Int8Linear (`lmsmith.quant.planar`), built on first use and kept
    with the module's other kernel layouts (the tuner builds it before any capture), or None where K does not
    tile."""
    lay = w.prepare(w.qweight.device, dtype)  # the same key as the other layouts: nothing is rebuilt
    if "q32" not in lay:
        if "planar_none" in lay:
            return None
        packed = (pack_int4_planar(w.qweight, w.scales, w.zeros, w.group_size) if w.method == "int4"
                  else pack_int8_planar(w.qweight))
        if packed is None:
            lay["planar_none"] = w.qweight[:0]
            return None
        lay.update(packed)
    return lay


def drop_planar(model) -> None:
    """Frees the planar copies (the batch-1 step picked none of their tiles): they would double int8 weights."""
    for m in model.modules():
        if isinstance(m, (Int4Linear, Int8Linear)) and m._packed is not None:
            for key in ("q32", "ab", "planar_none"):
                m._packed[1].pop(key, None)


def _operands(w, dtype: torch.dtype, planar: bool | str = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, str, int]:
    """(weight as stored, scales, offsets, kind, group size) of a projection; scales/offsets are the weight itself
    where there are none (unused by the kernel). `planar`: "P" / "F" / "S", the int4/int8 planar layout (kinds
    int4p / int4f / int4s, int8p)."""
    kind = weight_kind(w)
    if kind is None:
        raise ValueError(f"the GEMV kernel cannot read {type(w).__name__} weights")
    if kind == "dense":
        if planar:
            raise ValueError("planar tiles read int4 / int8 weights only")
        w = w if isinstance(w, torch.Tensor) else w.weight
        return w, w, w, kind, 1
    if planar:
        pl = planar_operands(w, dtype)
        if pl is None:
            raise ValueError(f"in_features={w.in_features} has no planar tiling")
        if kind == "int4":
            return pl["q32"], pl["ab"], pl["ab"], {"F": "int4f", "S": "int4s"}.get(planar, "int4p"), w.group_size
        return pl["q32"], pl["scales32"], pl["scales32"], "int8p", 1
    lay = w.prepare(w.qweight.device, dtype)  # built at load time (prepare_for_inference): a dict lookup here
    if kind == "int4":
        return w.qweight, lay["s32"], lay["m32"], kind, w.group_size
    return w.qweight.view(torch.uint8), lay["scales32"], lay["scales32"], kind, 1


_BLOCK_COUNTERS: dict[torch.device, torch.Tensor] = {}
_RETIRED: list[torch.Tensor] = []


_ONE_BITS: dict[torch.device, torch.Tensor] = {}


def one_bits(device: torch.device) -> torch.Tensor:
    """int32 [1] holding the bits of 1.0f (the planar kernels load it: see `_gemv_kernel`)."""
    t = _ONE_BITS.get(device)
    if t is None:
        t = _ONE_BITS[device] = torch.tensor([0x3F800000], dtype=torch.int32, device=device)
    return t


def block_counters(device: torch.device, n: int) -> torch.Tensor:
    """int32 zeros, one per row block, shared by every split-K launch on `device` (each finishing program resets
    its own, and launches on one stream never overlap). Grown outside graph captures: the warm-up runs first."""
    c = _BLOCK_COUNTERS.get(device)
    if c is None or c.numel() < n:
        if c is not None:
            _RETIRED.append(c)  # graphs captured earlier keep its address: never free it
        c = _BLOCK_COUNTERS[device] = torch.zeros(max(n, 4096), dtype=torch.int32, device=device)
    return c


def gemv(x: torch.Tensor, w, block_n: int = 4, block_k: int | str = 1024,
         out_dtype: torch.dtype | None = None, glu: bool = False, norm: tuple | None = None,
         rope: tuple | None = None, num_warps: int = 4, split: int = 1, norm_in: tuple | None = None,
         add: torch.Tensor | None = None):
    """x [1, K], w [N, K]: a 16-bit weight tensor, or a bias-free nn.Linear, Int8Linear or Int4Linear (read in
    its stored form) -> y [1, N]. `glu`: w is [gate; up] and y [1, N/2] = silu(x @ gate.T) * (x @ up.T).
    `norm=(residual [1, N], weight [N], eps, counter int32[1] zeroed)` also returns (rmsnorm(y + residual) *
    weight, y + residual) computed by the last program, i.e. (y, h, new residual).
    `rope=(cos, sin, positions, slots, k_cache, v_cache, heads, kv_heads, head_dim, counter)`: y is one token's
    q|k|v; returns (rotated q [1, heads, d], y) with the rotated k and v written into the cache slot.
    `block_k="F"` / `"S"` / `"P"`: read an int4 / int8 weight in its planar layout (int4: a flat tile / explicit
    per-thread FMA chains / per-thread partial sums; int8: one kernel), `split` programs per row block (split-K).
    `norm_in=(weight [K], eps)` (16-bit and stored int8 weights): x is the residual stream, the GEMV reads
    rmsnorm(x) * weight. `add=residual [1, N]`: also returns y + residual, i.e. (y, new residual)."""
    planar = block_k in ("P", "F", "S")
    wt, scales, offsets, kind, group = _operands(w, x.dtype, block_k if planar else False)
    n, k = _shape(w)
    assert x.shape[0] == 1 and x.shape[1] == k and x.stride(-1) == 1 and wt.stride(-1) == 1
    rows_w = n
    if glu:
        assert n % 2 == 0 and norm is None and rope is None
        n //= 2
    y = torch.empty(1, n, dtype=out_dtype or x.dtype, device=x.device)
    res = nw = h = res_out = cnt = cos = sin = pos = slot = q = kc = vc = ws = rb = y
    eps, stride_cos, heads, kvh, d = 0.0, 0, 1, 1, 2
    kw, blocks, one = 4, triton.cdiv(n, block_n), y
    if planar:
        planes = INT8_PLANES if kind == "int8p" else INT4_PLANES
        kw = plane_width(k, planes, None if kind == "int8p" else group)
        tiles = k // (planes * kw)
        while tiles % split:
            split //= 2
        if split > 1:
            ws = torch.empty(split, rows_w, dtype=torch.float32, device=x.device)
            rb = block_counters(x.device, blocks)
        block_k = 16  # unused by the planar branch
        one = one_bits(x.device)
    else:
        split = 1
    if norm is not None:
        res, nw, eps, cnt = norm
        h, res_out = torch.empty_like(res), torch.empty_like(res)
    if norm_in is not None:
        if planar or kind not in ("dense", "int8") or norm is not None:
            raise ValueError(f"norm_in reads a 16-bit or stored int8 weight without the norm epilogue, not {kind}")
        nw, eps = norm_in
    if add is not None:
        assert norm is None and not glu and rope is None and add.shape == (1, n)
        res, res_out = add, torch.empty_like(add)
    if rope is not None:
        cos, sin, pos, slot, kc, vc, heads, kvh, d, cnt = rope
        assert n == (heads + 2 * kvh) * d and kc.is_contiguous() and vc.is_contiguous()
        q = torch.empty(1, heads, d, dtype=x.dtype, device=x.device)
        stride_cos = cos.stride(0)
    _gemv_kernel[(blocks, split)](
        x, wt, scales, offsets, y, n, k, wt.stride(0), res, nw, h, res_out, cnt, eps,
        cos, sin, pos, slot, q, kc, vc, stride_cos, ws, rb, one,
        WQ=WQ_CODES[kind], GROUP=group, SUB=min(block_k, group) if kind == "int4" else 1,
        KW=kw, VEC=4, SPLIT=split,
        GLU=glu, NORM=norm is not None, NORM_BLOCK=triton.next_power_of_2(n) if norm is not None else 16,
        ROPE=rope is not None, H=heads, KV=kvh, D=d, HALF=d // 2, HALF_P=triton.next_power_of_2(max(d // 2, 1)),
        HP=triton.next_power_of_2(heads + kvh), VP=triton.next_power_of_2(kvh * d),
        BLOCK_N=block_n, BLOCK_K=block_k, num_warps=num_warps, num_stages=4, NORM_IN=norm_in is not None,
        ADD=add is not None, **pdl.launch())
    if rope is not None:
        return q, y
    if add is not None:
        return y, res_out
    return y if norm is None else (y, h, res_out)


def qkv_weight(attn):
    """The fused q|k|v projection: a quantized linear (quantized checkpoints) or the concatenated weight."""
    return attn.qkv_proj if attn.qkv_proj is not None else attn.qkv_w


def gate_up_weight(mlp):
    return mlp.gate_up_proj if mlp.gate_up_proj is not None else mlp.gu_w


def _fused_in(w, bias=None) -> bool:
    """Can a GEMV tile replace the model's own kernel for this fused projection (qkv / gate_up)?"""
    return bias is None and weight_kind(w) is not None


def bs1_eligible(model) -> bool:
    """The GEMV step reads unsharded, bias-free 16-bit, int8 or int4 weights (any mix); anything else (fp8 or
    tensor-parallel layers, biases on o_proj/down/lm_head, fp32) keeps the model's own step. qkv and gate_up
    with a bias or in fp8 run the model's own kernels inside the GEMV step."""
    s = model.spec
    if triton is None or not model.fused or model.model.embed_tokens.weight.dtype not in (torch.bfloat16, torch.float16):
        return False
    if weight_kind(model.lm_head) is None or _shape(model.lm_head) != (s.vocab_size, s.hidden_size):
        return False
    for layer in model.model.layers:
        o, down = layer.self_attn.o_proj, layer.mlp.down_proj
        if weight_kind(o) is None or weight_kind(down) is None:
            return False
        if _shape(o) != (s.hidden_size, s.num_heads * s.head_dim) or _shape(down) != (s.hidden_size, s.intermediate_size):
            return False
        if qkv_weight(layer.self_attn) is None or gate_up_weight(layer.mlp) is None:
            return False
    return True


def forward_bs1(model, buf, tokens, cos, sin, kv_cache, meta, counter: torch.Tensor,
                tiles: dict[str, tuple] | None = None) -> torch.Tensor:
    """The fused decoder step of LlamaForCausalLM._forward_fused at one token, with the GEMV kernels above.
    buf: DecodeGraphs' input rows [1, ...]; tokens: the device tokens its source column points into.
    A projection whose tile is None runs the model's own kernel (cuBLAS, tinygemm, the quantized linear's).
    Returns fp32 logits [1, V]."""
    t = {**DEFAULT_TILES, **(tiles or {})}
    if t.get("norm_in"):
        return _forward_bs1_norm_in(model, buf, tokens, cos, sin, kv_cache, meta, t)
    s = model.spec
    layers = model.model.layers
    ln = layers[0].input_layernorm
    h, x = embed_norm(buf, tokens, model.model.embed_tokens.weight, ln.weight, ln.eps)
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        if t.get("qkv") is not None and _fused_in(qkv_weight(attn), attn.qkv_b):
            # GEMV with RoPE + K/V cache write as its epilogue
            q, qkv = _call(h, qkv_weight(attn), t["qkv"], rope=(cos, sin, meta.positions, meta.slot_mapping,
                                                                kv_cache[i, 0], kv_cache[i, 1], s.num_heads,
                                                                s.num_kv_heads, s.head_dim, counter))
            # rotated k and v are already in the cache, where paged_attention(write=False) reads them
            k, v = qkv[:, s.num_heads * s.head_dim:].view(2, s.num_kv_heads, s.head_dim).unbind(0)
            o = _attend(q, k, v, kv_cache[i], meta, attn.scale, t.get("attn_splits"))
        elif meta.decode_only and (t.get("attn") == "fused" or one_launch_decode_attention(h.device)):
            # RoPE, the K/V write and attention in one launch
            o = decode_attention(attn.qkv(h), cos, sin, meta.positions, meta.slot_mapping, kv_cache[i, 0],
                                 kv_cache[i, 1], meta.decode_block_tables, meta.decode_context_lens, s.num_heads,
                                 s.num_kv_heads, s.head_dim, attn.scale, meta.sliding_window, t.get("attn_splits"))
        else:
            q, k, v = F2.rope_and_cache(attn.qkv(h), cos, sin, meta.positions, meta.slot_mapping, kv_cache[i, 0],
                                        kv_cache[i, 1], s.num_heads, s.num_kv_heads, s.head_dim)
            o = _attend(q, k, v, kv_cache[i], meta, attn.scale, t.get("attn_splits"))
        ln = layer.post_attention_layernorm
        if t.get("o_proj") is None:  # the model's own matmul and the separate add+RMSNorm kernel
            h, x = F2.add_rmsnorm(attn.o_proj(o.reshape(1, -1)), x, ln.weight, ln.eps)
        else:
            _, h, x = _call(o.reshape(1, -1), attn.o_proj, t["o_proj"], norm=(x, ln.weight, ln.eps, counter))
        if t.get("gate_up") is not None and _fused_in(gate_up_weight(mlp), mlp.gu_b):  # SwiGLU as its epilogue
            act = _call(h, gate_up_weight(mlp), t["gate_up"], glu=True)
        else:
            act = F2.silu_mul(mlp.gate_up(h))
        ln = layers[i + 1].input_layernorm if i + 1 < len(layers) else model.model.norm
        if t.get("down") is None:
            h, x = F2.add_rmsnorm(mlp.down_proj(act), x, ln.weight, ln.eps)
        else:
            _, h, x = _call(act, mlp.down_proj, t["down"], norm=(x, ln.weight, ln.eps, counter))
    if t.get("lm_head") is None:
        return model.lm_head(h).float()
    return _call(h, model.lm_head, t["lm_head"], out_dtype=torch.float32)


def projection_weights(model) -> dict[str, tuple]:
    """Each projection of the batch-1 step as (the first layer's weight as the GEMV reads it, its bias)."""
    layer = model.model.layers[0]
    return {"qkv": (qkv_weight(layer.self_attn), layer.self_attn.qkv_b), "o_proj": (layer.self_attn.o_proj, None),
            "gate_up": (gate_up_weight(layer.mlp), layer.mlp.gu_b), "down": (layer.mlp.down_proj, None),
            "lm_head": (model.lm_head, None)}


def norm_in_ok(model, tiles: dict) -> bool:
    """Every projection on a stored-layout 16-bit / int8 tile: the step can carry the residual stream into each
    GEMV (RMSNorm in its prologue, the residual add in its epilogue) with no add+RMSNorm tickets."""
    weights = projection_weights(model)
    return all(tiles.get(name) is not None and isinstance(tiles[name][1], int) and b is None
               and weight_kind(w) in ("dense", "int8") for name, (w, b) in weights.items())


def _forward_bs1_norm_in(model, buf, tokens, cos, sin, kv_cache, meta, t: dict) -> torch.Tensor:
    """forward_bs1 with the residual stream x handed from GEMV to GEMV: qkv, gate_up and lm_head normalize x in
    their prologue, o_proj and down add their output to it in their epilogue; attention is the one-launch kernel
    (RoPE, K/V write, split attention and merge). Per layer: 5 launches, none with a serial tail."""
    s = model.spec
    layers = model.model.layers
    ln = layers[0].input_layernorm
    _, x = embed_norm(buf, tokens, model.model.embed_tokens.weight, ln.weight, ln.eps)
    for i, layer in enumerate(layers):
        attn, mlp = layer.self_attn, layer.mlp
        ln = layer.input_layernorm
        qkv = _call(x, qkv_weight(attn), t["qkv"], norm_in=(ln.weight, ln.eps))
        o = decode_attention(qkv, cos, sin, meta.positions, meta.slot_mapping, kv_cache[i, 0], kv_cache[i, 1],
                             meta.decode_block_tables, meta.decode_context_lens, s.num_heads, s.num_kv_heads,
                             s.head_dim, attn.scale, meta.sliding_window, t.get("attn_splits"))
        _, x = _call(o.reshape(1, -1), attn.o_proj, t["o_proj"], add=x)
        ln = layer.post_attention_layernorm
        act = _call(x, gate_up_weight(mlp), t["gate_up"], glu=True, norm_in=(ln.weight, ln.eps))
        _, x = _call(act, mlp.down_proj, t["down"], add=x)
    ln = model.model.norm
    return _call(x, model.lm_head, t["lm_head"], out_dtype=torch.float32, norm_in=(ln.weight, ln.eps))


def _attend(q, k, v, layer_cache, meta, scale: float, splits: int | None) -> torch.Tensor:
    """Attention of rotated q against the cache that already holds the new k/v (`splits`: a forced split count)."""
    if splits and meta.decode_only and available(q.device):
        return paged_decode(q, layer_cache[0], layer_cache[1], meta.decode_block_tables, meta.decode_context_lens,
                            scale, meta.sliding_window, splits=splits)
    return paged_attention(q, k, v, layer_cache[0], layer_cache[1], meta, scale, write=False)


def _call(x, w, tile: tuple, **kw):
    """tile: (rows, columns, warps) of the stored layout, or (rows, "F" | "S" | "P", warps, split) of the planar one."""
    return gemv(x, w, tile[0], tile[1], num_warps=tile[2] if len(tile) > 2 else 4,
                split=tile[3] if len(tile) > 3 else 1, **kw)


def replay_ms(g: torch.cuda.CUDAGraph, reps: int, warmup: int = 1) -> float:
    """Mean milliseconds of one replay of a captured graph (CUDA events, after `warmup` replays)."""
    for _ in range(warmup):
        g.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        g.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / reps


def _time_graph(fn, reps: int = 5) -> float:
    fn()  # compile
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fn()
    return replay_ms(g, reps)


def tile_candidates(name: str, w, bias=None) -> list:
    """The tiles tried for one projection, by its weight kind; None (the model's own kernel: cuBLAS, tinygemm,
    the quantized linear's, with the separate add+RMSNorm / RoPE kernels) first, the only choice where the
    GEMV cannot read the weight (fp8, a bias)."""
    kind = weight_kind(w) if bias is None else None
    if kind is None:
        return [None]
    table = CANDIDATE_TILES[kind]
    stored = table.get(name, table.get("*", []))
    if kind == "dense" or not planar_enabled():
        return [None] + stored
    # int4 on the stored layout never beat tinygemm (quant_engine_notes.md): planar only; int8 keeps both
    return [None] + planar_tiles(name, kind) + (stored if kind == "int8" else [])


def uses_planar(plan: dict | None) -> bool:
    return any(isinstance(t, tuple) and len(t) > 1 and t[1] in ("P", "F", "S") for t in (plan or {}).values())


@torch.inference_mode()
def tune_tiles(model, counter: torch.Tensor, with_pdl: bool = False) -> tuple[dict[str, tuple], dict[str, float]]:
    """Per projection, the fastest tile shape on this device: each candidate runs once per layer (every
    layer's own weights, as in a step) inside a CUDA graph. Returns (tiles, {"proj@tile": ms}).
    `with_pdl`: the launches overlap (serve.pdl), which favours tiles that read more of their weights before
    waiting for the previous kernel; the keys then end in "+pdl"."""
    s = model.spec
    emb = model.model.embed_tokens.weight
    dev, dt = emb.device, emb.dtype
    layers = model.model.layers
    x_o = torch.randn(1, s.num_heads * s.head_dim, device=dev, dtype=dt)
    act = torch.randn(1, s.intermediate_size, device=dev, dtype=dt)
    res = torch.randn(1, s.hidden_size, device=dev, dtype=dt)
    h = torch.randn(1, s.hidden_size, device=dev, dtype=dt)
    nw = layers[0].post_attention_layernorm.weight
    kc = torch.zeros(2, 16, s.num_kv_heads, s.head_dim, device=dev, dtype=dt)
    vc = torch.zeros_like(kc)
    cos = torch.randn(8, s.head_dim, device=dev, dtype=dt)
    pos = torch.tensor([3], device=dev)
    slot = torch.tensor([5], device=dev)
    hd = (s.num_heads, s.num_kv_heads, s.head_dim)

    def qkv(tile):
        for layer in layers:
            if tile is None:
                F2.rope_and_cache(layer.self_attn.qkv(h), cos, cos, pos, slot, kc, vc, *hd)
            else:
                _call(h, qkv_weight(layer.self_attn), tile, rope=(cos, cos, pos, slot, kc, vc, *hd, counter))

    def normed(x_in, proj):
        """A projection followed by add+RMSNorm: its own kernel and the norm kernel, or the GEMV's epilogue."""
        def job(tile):
            for layer in layers:
                if tile is None:
                    F2.add_rmsnorm(proj(layer)(x_in), res, nw, 1e-5)
                else:
                    _call(x_in, proj(layer), tile, norm=(res, nw, 1e-5, counter))
        return job

    jobs = {
        "qkv": qkv,
        "gate_up": lambda tile: [F2.silu_mul(layer.mlp.gate_up(h)) if tile is None
                                 else _call(h, gate_up_weight(layer.mlp), tile, glu=True) for layer in layers],
        "o_proj": normed(x_o, lambda layer: layer.self_attn.o_proj),
        "down": normed(act, lambda layer: layer.mlp.down_proj),
        "lm_head": lambda tile: model.lm_head(h).float() if tile is None else _call(h, model.lm_head, tile,
                                                                                   out_dtype=torch.float32),
    }
    weights = projection_weights(model)
    tiles, timings = {}, {}
    for name, job in jobs.items():
        best, tiles[name] = None, None  # None: the model's own kernel (also where no tile compiles)
        for tile in tile_candidates(name, *weights[name]):
            try:
                with pdl.active(with_pdl):
                    ms = _time_graph(lambda: job(tile))
            except Exception:  # a tile that does not compile here
                continue
            timings[f"{name}@{'x'.join(map(str, tile)) if tile else 'own'}" + ("+pdl" if with_pdl else "")] = round(ms, 4)
            if best is None or ms < best:
                best, tiles[name] = ms, tile
    return tiles, timings
