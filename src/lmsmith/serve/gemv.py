"""A Triton GEMV for batch-1 decode projections (y = x @ W.T, x [1, K], W [N, K] row-major).

At batch 1 a projection is a pure weight stream; cuBLAS sometimes picks a split-K kernel plus a reduction or
leaves bandwidth unused on the small square ones (o_proj). Each program here owns `block_n` output rows and
streams their weights `block_k` columns at a time with fp32 accumulation: one kernel, no reduction pass.
"""

from __future__ import annotations

import torch

from lmsmith.serve.paged_decode import triton

if triton is not None:
    import triton.language as tl

    @triton.jit
    def _gemv_kernel(x_ptr, w_ptr, y_ptr, N, K, stride_w, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
        rmask = rows < N
        acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            cmask = cols < K
            x = tl.load(x_ptr + cols, mask=cmask, other=0.0).to(tl.float32)
            w = tl.load(w_ptr + rows[:, None].to(tl.int64) * stride_w + cols[None, :],
                        mask=rmask[:, None] & cmask[None, :], other=0.0)
            acc += w.to(tl.float32) * x[None, :]
        y = tl.sum(acc, 1)
        tl.store(y_ptr + rows, y.to(y_ptr.dtype.element_ty), mask=rmask)


def gemv(x: torch.Tensor, w: torch.Tensor, block_n: int = 8, block_k: int = 512, num_warps: int = 4) -> torch.Tensor:
    """x [1, K], w [N, K] -> [1, N] in x's dtype."""
    n, k = w.shape
    assert x.shape == (1, k) and x.stride(-1) == 1 and w.stride(-1) == 1
    y = torch.empty(1, n, dtype=x.dtype, device=x.device)
    _gemv_kernel[(triton.cdiv(n, block_n),)](x, w, y, n, k, w.stride(0), BLOCK_N=block_n, BLOCK_K=block_k,
                                              num_warps=num_warps, num_stages=4)
    return y
