"""Triton kernels for quantized linears on CUDA at decode sizes (a few rows), plus fp8 activation scaling.

At batch 1..16 a linear is a matrix-vector product: its time is the weight bytes read, so the weight must be
read once, in its stored form, and dequantized in registers. PyTorch's kernels either ignore small M (tinygemm
is tuned for A100 tiles) or need extra launches around them (fp8 `_scaled_mm` wants the activation quantized
by separate ops and M padded to 16). Here one launch does it all:

    `wq_matmul`: y[M, N] = x[M, K] @ dequant(W)[N, K]^T (+ bias), W int8 or fp8 (one scale per output
    channel) or packed int4 (per-group scale and offset: w = q * s + m). Tiles of BLOCK_N output channels x
    BLOCK_K inputs, x padded to 16 rows for the tensor cores; tile sizes autotuned per (N, K) the first time a
    shape is seen (outside any CUDA graph capture: the runner warms up before capturing).

    `fp8_quantize_rows`: per-row (per-token) e4m3 scaling of an activation into a row-padded buffer, one launch,
    for `torch._scaled_mm` at larger M.
"""

from __future__ import annotations

import os

import torch

try:  # Triton ships with CUDA builds of torch; the CPU path never needs it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

SMALL_M = 16  # decode sizes: one 16-row tile of x (int8 also uses it up to 64 rows: PyTorch's int8 kernel is slow)
FP8_MAX = 448.0


def available(x: torch.Tensor) -> bool:
    """Triton path: a CUDA tensor (or the interpreter, for tests) with 16-bit activations."""
    on_device = x.device.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"
    return triton is not None and on_device and x.dtype in (torch.bfloat16, torch.float16)


if triton is not None:

    def _configs():
        out = []
        # few configs: each one compiles per method at engine start (~1 s each)
        for bn, bk, warps, stages in [(16, 256, 4, 4), (16, 512, 4, 3), (32, 256, 4, 4), (32, 512, 8, 3),
                                      (64, 256, 4, 3), (16, 1024, 8, 2)]:
            out.append(triton.Config({"BLOCK_N": bn, "BLOCK_K": bk}, num_warps=warps, num_stages=stages))
        return out

    @triton.jit(do_not_specialize=["M"])  # one binary for every decode bucket (M = 1 would specialize)
    def _wq_mm_kernel(x_ptr, w_ptr, s_ptr, m_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_om,
                      INT4: tl.constexpr, FP8: tl.constexpr, GROUP: tl.constexpr, HAS_BIAS: tl.constexpr,
                      M_BUCKET: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid_n = tl.program_id(0)
        pid_m = tl.program_id(1)
        rm = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        rn = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
        mask_m = rm < M
        mask_n = rn < N
        rn64 = rn.to(tl.int64)
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        x_rows = x_ptr + rm[:, None] * stride_xm
        if INT4:
            HALF: tl.constexpr = BLOCK_K // 2
            R: tl.constexpr = BLOCK_K // GROUP  # groups per tile
            G = K // GROUP
            rh = tl.arange(0, HALF)
            rg = tl.arange(0, R)
            for k0 in range(0, K, BLOCK_K):
                kmask = (k0 + 2 * rh) < K
                p = tl.load(w_ptr + rn64[:, None] * (K // 2) + (k0 // 2 + rh)[None, :],
                            mask=mask_n[:, None] & kmask[None, :], other=0)
                g = k0 // GROUP + rg
                gmask = mask_n[:, None] & (g < G)[None, :]
                s = tl.load(s_ptr + rn64[:, None] * G + g[None, :], mask=gmask, other=0.0)
                m = tl.load(m_ptr + rn64[:, None] * G + g[None, :], mask=gmask, other=0.0)
                lo = tl.reshape((p & 0xF).to(tl.float32), (BLOCK_N, R, GROUP // 2))
                hi = tl.reshape((p >> 4).to(tl.float32), (BLOCK_N, R, GROUP // 2))
                w_lo = tl.reshape(lo * s[:, :, None] + m[:, :, None], (BLOCK_N, HALF)).to(x_ptr.dtype.element_ty)
                w_hi = tl.reshape(hi * s[:, :, None] + m[:, :, None], (BLOCK_N, HALF)).to(x_ptr.dtype.element_ty)
                xmask = mask_m[:, None] & kmask[None, :]
                x_even = tl.load(x_rows + (k0 + 2 * rh)[None, :], mask=xmask, other=0.0)
                x_odd = tl.load(x_rows + (k0 + 2 * rh + 1)[None, :], mask=xmask, other=0.0)
                acc += tl.dot(x_even, tl.trans(w_lo))
                acc += tl.dot(x_odd, tl.trans(w_hi))
        else:
            rk = tl.arange(0, BLOCK_K)
            for k0 in range(0, K, BLOCK_K):
                kk = k0 + rk
                kmask = kk < K
                w = tl.load(w_ptr + rn64[:, None] * K + kk[None, :], mask=mask_n[:, None] & kmask[None, :], other=0)
                if FP8:  # e4m3 bytes held as uint8: reinterpret, then widen (exact in 16 bits)
                    w = w.to(tl.float8e4nv, bitcast=True)
                x = tl.load(x_rows + kk[None, :], mask=mask_m[:, None] & kmask[None, :], other=0.0)
                acc += tl.dot(x, tl.trans(w.to(x_ptr.dtype.element_ty)))
            s = tl.load(s_ptr + rn, mask=mask_n, other=0.0)
            acc = acc * s[None, :]
        if HAS_BIAS:
            acc += tl.load(b_ptr + rn, mask=mask_n, other=0.0).to(tl.float32)[None, :]
        tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], acc.to(out_ptr.dtype.element_ty),
                 mask=mask_m[:, None] & mask_n[None, :])

    _wq_mm_tuned = triton.autotune(configs=_configs(), key=["N", "K", "INT4", "FP8", "M_BUCKET"])(_wq_mm_kernel)

    @triton.jit
    def _dequant_kernel(w_ptr, s_ptr, m_ptr, out_ptr, N, K, INT4: tl.constexpr, FP8: tl.constexpr,
                        GROUP: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        """The 16-bit weight [N, K] from its quantized form: the large-M path runs cuBLAS on it."""
        rn = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
        nmask = rn < N
        if INT4:  # BLOCK_K is a multiple of GROUP: one scale and offset per group, broadcast, one contiguous store
            HB: tl.constexpr = BLOCK_K // 2
            NG: tl.constexpr = BLOCK_K // GROUP
            G = K // GROUP
            rb = tl.program_id(1) * HB + tl.arange(0, HB)  # byte j holds elements 2j (low nibble) and 2j + 1
            p = tl.load(w_ptr + rn[:, None] * (K // 2) + rb[None, :], mask=nmask[:, None] & (rb < K // 2)[None, :],
                        other=0).to(tl.int32)
            q = tl.interleave(p & 15, p >> 4).to(tl.float32)  # [BLOCK_N, BLOCK_K] in column order
            gk = tl.program_id(1) * NG + tl.arange(0, NG)
            gmask = nmask[:, None] & (gk < G)[None, :]
            s = tl.load(s_ptr + rn[:, None] * G + gk[None, :], mask=gmask, other=0.0)
            m = tl.load(m_ptr + rn[:, None] * G + gk[None, :], mask=gmask, other=0.0)
            w = tl.reshape(tl.reshape(q, (BLOCK_N, NG, GROUP)) * s[:, :, None] + m[:, :, None], (BLOCK_N, BLOCK_K))
            rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
            tl.store(out_ptr + rn[:, None] * K + rk[None, :], w.to(out_ptr.dtype.element_ty),
                     mask=nmask[:, None] & (rk < K)[None, :])
        else:
            rk = tl.program_id(1) * BLOCK_K + tl.arange(0, BLOCK_K)
            mask = nmask[:, None] & (rk < K)[None, :]
            w = tl.load(w_ptr + rn[:, None] * K + rk[None, :], mask=mask, other=0)
            if FP8:
                w = w.to(tl.float8e4nv, bitcast=True)
            s = tl.load(s_ptr + rn, mask=nmask, other=0.0)
            tl.store(out_ptr + rn[:, None] * K + rk[None, :], (w.to(tl.float32) * s[:, None]).to(out_ptr.dtype.element_ty),
                     mask=mask)

    @triton.jit
    def _fp8_rows_kernel(x_ptr, q_ptr, s_ptr, M, K, stride_xm, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        cmask = cols < K
        live = row < M
        x = tl.load(x_ptr + row * stride_xm + cols, mask=cmask & live, other=0.0).to(tl.float32)
        scale = tl.maximum(tl.max(tl.abs(x), 0) / 448.0, 1e-12)
        q = tl.minimum(tl.maximum(x / scale, -448.0), 448.0)
        tl.store(q_ptr + row * K + cols, q.to(q_ptr.dtype.element_ty), mask=cmask)
        tl.store(s_ptr + row, tl.where(live, scale, 1.0))


def wq_matmul(x: torch.Tensor, weight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None,
              bias: torch.Tensor | None, group_size: int = 0, config: dict | None = None,
              kind: str | None = None) -> torch.Tensor:
    """x [M, K] (16-bit) times a quantized weight, in one launch.

    kind "int8" / "fp8": weight int8 / e4m3 (or its uint8 bytes) [N, K] with `scales` float32 [N]; "int4":
    packed uint8 [N, K/2] with `scales` and `offsets` float32 [N, K/g] (w = q * s + m). Default kind: from the
    weight dtype (uint8 = int4). `config` pins the tile (tests); else autotuned per shape and M bucket."""
    m_rows, k = x.shape
    if kind is None:
        kind = {torch.int8: "int8", torch.float8_e4m3fn: "fp8"}.get(weight.dtype, "int4")
    int4, fp8 = kind == "int4", kind == "fp8"
    if weight.dtype == torch.float8_e4m3fn:
        weight = weight.view(torch.uint8)
    n = weight.shape[0]
    out = torch.empty(m_rows, n, dtype=x.dtype, device=x.device)
    x = x if x.stride(-1) == 1 else x.contiguous()
    args = (x, weight, scales, offsets if offsets is not None else scales, bias if bias is not None else scales,
            out, m_rows, n, k, x.stride(0), out.stride(0))
    kw = dict(INT4=int4, FP8=fp8, GROUP=group_size if int4 else 1, HAS_BIAS=bias is not None, BLOCK_M=16)
    if config is not None:
        grid = (triton.cdiv(n, config["BLOCK_N"]), triton.cdiv(m_rows, 16))
        _wq_mm_kernel[grid](*args, **kw, M_BUCKET=0, **config)
    elif os.environ.get("LMSMITH_TRITON_AUTOTUNE", "1") == "0":  # tests: one config, no tuning runs
        _wq_mm_kernel[(triton.cdiv(n, 32), triton.cdiv(m_rows, 16))](*args, **kw, M_BUCKET=0, BLOCK_N=32, BLOCK_K=256)
    else:
        grid = lambda meta: (triton.cdiv(n, meta["BLOCK_N"]), triton.cdiv(m_rows, 16))  # noqa: E731
        _wq_mm_tuned[grid](*args, **kw, M_BUCKET=1 if m_rows <= 16 else 2)
    return out


def fp8_quantize_rows(x: torch.Tensor, pad_to: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (e4m3 [Mp, K], float32 scales [Mp, 1]) with Mp = M rounded up to `pad_to`; pad rows are 0."""
    m_rows, k = x.shape
    mp = -(-m_rows // pad_to) * pad_to
    q = torch.empty(mp, k, dtype=torch.float8_e4m3fn, device=x.device)
    s = torch.empty(mp, 1, dtype=torch.float32, device=x.device)
    x = x if x.stride(-1) == 1 else x.contiguous()
    block = triton.next_power_of_2(k)
    _fp8_rows_kernel[(mp,)](x, q, s, m_rows, k, x.stride(0), BLOCK=block, num_warps=8 if block >= 4096 else 4)
    return q, s


def dequantize(weight: torch.Tensor, scales: torch.Tensor, offsets: torch.Tensor | None, k: int, dtype: torch.dtype,
               kind: str, group_size: int = 0) -> torch.Tensor:
    """One launch: the [N, k] weight in `dtype` (int8 / fp8 bytes with per-row scales, or packed int4)."""
    if weight.dtype == torch.float8_e4m3fn:
        weight = weight.view(torch.uint8)
    n = weight.shape[0]
    out = torch.empty(n, k, dtype=dtype, device=weight.device)
    bn, bk = 32, max(256, group_size) if kind == "int4" else 256  # int4: whole groups per tile (group sizes: 2^i)
    _dequant_kernel[(triton.cdiv(n, bn), triton.cdiv(k, bk))](
        weight, scales, offsets if offsets is not None else scales, out, n, k, INT4=kind == "int4", FP8=kind == "fp8",
        GROUP=group_size if kind == "int4" else 1, BLOCK_N=bn, BLOCK_K=bk, num_warps=4)
    return out
