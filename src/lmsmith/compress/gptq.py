"""GPTQ (Frantar et al., 2022): quantize a weight column by column and push each column's rounding error
onto the columns not yet quantized, weighted by the inverse Hessian H = X^T X of the layer's inputs.

- act-order: columns are visited in decreasing order of H's diagonal (the inputs with the most energy
  first, while the most columns are left to absorb their error).
- groups stay contiguous in the original column order (our int4 format has no per-column group index):
  a group's scale and zero point are fixed when its first column is visited, from the group's current
  (already error-corrected) weights. Without act-order this is exactly GPTQ's group rule.
- lazy batch updates: the error of a block of 128 columns reaches the rest of the matrix in one matmul.
Linears that read the same input (q/k/v, gate/up) share a Hessian and are quantized as one matrix.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

from lmsmith.compress.grid import Grid
from lmsmith.errors import LmsmithError

BLOCK = 128


@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """The column loops run thousands of tiny ops: with several intra-op threads each op pays a thread
    hand-off that costs more than its math (25x slower measured on 2 busy cores), so run them on one."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def inverse_hessian_chol(h: torch.Tensor, damp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp * mean(diag H) * I)^-1, raising the damping until it factorizes."""
    k = h.shape[0]
    mean_diag = torch.diag(h).mean().clamp(min=1e-8)
    eye = torch.eye(k, dtype=h.dtype, device=h.device)
    for extra in (1.0, 10.0, 100.0, 1000.0):
        try:
            chol = torch.linalg.cholesky(h + damp * extra * mean_diag * eye)
            hinv = torch.cholesky_inverse(chol)
            return torch.linalg.cholesky(hinv, upper=True)
        except RuntimeError:  # torch.linalg.LinAlgError subclasses RuntimeError
            continue
    raise LmsmithError("GPTQ: the calibration Hessian is not positive definite even with heavy damping",
                       "use more calibration text (--samples/--seq-len) or --algorithm rtn")


@torch.no_grad()
@single_thread()
def gptq_quantize(w: torch.Tensor, h: torch.Tensor, grid: Grid, group_size: int | None, act_order: bool = True,
                  damp: float = 0.01, block: int = BLOCK) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """GPTQ of one weight [N, K] given the input Hessian [K, K].

    Returns (q [N, K] integer values as float, scales [N, G], zeros [N, G]) in the original column order;
    int8 uses one group per row (G = 1)."""
    w = w.detach().float().clone()
    h = h.detach().float().clone()
    n, k = w.shape
    g = k if grid.method == "int8" or not group_size else int(group_size)
    if k % g:
        raise LmsmithError(f"group size {g} does not divide {k} input features")
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    perm = torch.argsort(torch.diag(h), descending=True) if act_order else torch.arange(k, device=w.device)
    invperm = torch.argsort(perm)
    w = w[:, perm]
    h = h[perm][:, perm]
    hinv = inverse_hessian_chol(h, damp)

    n_groups = k // g
    scales = torch.zeros(n, n_groups, device=w.device)
    zeros = torch.zeros(n, n_groups, device=w.device)
    ready = [False] * n_groups
    q_all = torch.zeros(n, k, device=w.device)  # in permuted order
    group_of = (perm // g).tolist()
    group_pos = [invperm[j * g:(j + 1) * g] for j in range(n_groups)]  # permuted positions of each group

    for i1 in range(0, k, block):
        i2 = min(i1 + block, k)
        w1 = w[:, i1:i2].clone()
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        for i in range(i2 - i1):
            gi = group_of[i1 + i]
            if not ready[gi]:  # first column of this group: fix its grid from the group's current weights
                pos = group_pos[gi]
                vals = w[:, pos].clone()
                inblock = (pos >= i1) & (pos < i2)
                if inblock.any():
                    vals[:, inblock] = w1[:, pos[inblock] - i1]
                scales[:, gi], zeros[:, gi] = grid.params(vals)
                ready[gi] = True
            col = w1[:, i]
            s, z = scales[:, gi], zeros[:, gi]
            q = torch.round(col / s + z).clamp_(grid.qmin, grid.qmax)
            q_all[:, i1 + i] = q
            e = err1[:, i]
            torch.sub(col, (q - z).mul_(s), out=e).div_(hinv1[i, i])
            w1[:, i:].addr_(e, hinv1[i, i:], alpha=-1.0)  # in place: no [N, block] temporary per column
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return q_all[:, invperm], scales, zeros


def quantization_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """tr((W - Ŵ) H (W - Ŵ)^T): the layer's output error on the calibration inputs (what GPTQ minimizes)."""
    d = (w - w_hat).float()
    return float(torch.einsum("nk,kl,nl->", d, h.float(), d))
