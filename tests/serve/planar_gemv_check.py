"""Run by test_gemv_planar.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter): the planar int4 /
int8 GEMV tiles, with split-K and every epilogue, against the PyTorch math on the dequantized weights.
Prints one line per case, "ok <case> <relative error>" or raises."""

from __future__ import annotations

import os
import sys

assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lmsmith.quant import Int4Linear, Int8Linear  # noqa: E402
from lmsmith.serve.gemv import block_counters, gemv  # noqa: E402

TOL = 1e-2  # 16-bit outputs (the fp32 dot itself agrees to ~1e-5, see the fp32-out cases)
# The interpreter holds bfloat16 as raw 16-bit integers in element-wise ops (the epilogues add and multiply
# activations in their own dtype): the epilogue cases run in float16, the dot cases in both.


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm().clamp(min=1e-12)).item()


def check(name: str, got: torch.Tensor, want: torch.Tensor, tol: float = TOL) -> None:
    err = rel(got, want)
    if not err < tol:
        raise AssertionError(f"{name}: relative error {err:.3g} >= {tol}")
    print(f"ok {name} {err:.2e}", flush=True)


def rmsnorm(s: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    hf = s.float()
    return (w * (hf * torch.rsqrt(hf.pow(2).mean(-1, keepdim=True) + eps)).to(s.dtype)).to(s.dtype)


def modules(k: int, n: int, seed: int, dtype: torch.dtype = torch.float16):
    torch.manual_seed(seed)
    lin = torch.nn.Linear(k, n, bias=False)
    with torch.no_grad():
        lin.weight.mul_(torch.linspace(0.2, 3.0, k))  # uneven columns: groups with different scales
    yield "int4g32", Int4Linear.from_linear(lin, 32).to(dtype)
    yield "int4g128sym", Int4Linear.from_linear(lin, 128, symmetric=True).to(dtype)
    yield "int8", Int8Linear.from_linear(lin).to(dtype)


def main() -> int:
    k, n = (int(v) for v in (sys.argv[1:3] if len(sys.argv) > 2 else (512, 96)))
    xb = (torch.randn(1, k) * 2).bfloat16()
    for kind, mod in modules(k, n, 0, torch.bfloat16):
        ref = xb.float() @ mod.dequantize(torch.float32).t()
        for rows, variant, split, warps in ((4, "P", 1, 4), (8, "P", 2, 1), (16, "P", 4, 1), (4, "F", 1, 1),
                                            (8, "F", 4, 4), (8, "S", 1, 1), (4, "S", 2, 1)):
            y = gemv(xb, mod, rows, variant, out_dtype=torch.float32, split=split, num_warps=warps)
            check(f"{kind}-bf16-dot-{rows}{variant}{split}w{warps}", y, ref, 1e-4)
    for kind, mod in modules(k, 112, 2, torch.bfloat16):  # N not a multiple of the rows per program
        ref = xb.float() @ mod.dequantize(torch.float32).t()
        for rows, variant, split in ((32, "F", 2), (32, "P", 1)):
            y = gemv(xb, mod, rows, variant, out_dtype=torch.float32, split=split, num_warps=1)
            check(f"{kind}-ragged-{rows}{variant}{split}", y, ref, 1e-4)
    x = xb.half()
    for kind, mod in modules(k, n, 0):
        ref = x.float() @ mod.dequantize(torch.float32).t()
        check(f"{kind}-fp16-dot", gemv(x, mod, 8, "P", out_dtype=torch.float32, split=2), ref, 1e-4)
        check(f"{kind}-fp16-out", gemv(x, mod, 8, "P", split=2), ref)
        # gate_up with the SwiGLU epilogue: y = silu(gate) * up, gate/up rounded to bf16 first
        g, u = ref.half().float().chunk(2, dim=-1)
        for variant, split in (("P", 1), ("F", 2), ("S", 1)):
            check(f"{kind}-glu-{variant}{split}", gemv(x, mod, 4, variant, glu=True, split=split), F.silu(g) * u)
        # o_proj/down with the add+RMSNorm epilogue, the ticket counter back at zero afterwards
        res = torch.randn(1, n).half()
        nw = (torch.rand(n) + 0.5).half()
        cnt = torch.zeros(1, dtype=torch.int32)
        for variant, split in (("F", 1), ("P", 4), ("F", 4), ("S", 2)):
            y, h, r = gemv(x, mod, 8, variant, norm=(res, nw, 1e-5, cnt), split=split)
            s = ref.half() + res
            check(f"{kind}-norm-{variant}{split}-res", r, s)
            check(f"{kind}-norm-{variant}{split}-h", h, rmsnorm(s, nw, 1e-5))
            assert cnt.item() == 0, "the norm ticket was not reset"
        assert int(block_counters(x.device, 1).abs().sum()) == 0, "a split-K row-block counter was not reset"
    # qkv with the RoPE + K/V cache epilogue (heads 2, kv heads 1, head dim 32: N = 128)
    heads, kvh, d = 2, 1, 32
    nq = (heads + 2 * kvh) * d
    for kind, mod in modules(k, nq, 1):
        ref = (x.float() @ mod.dequantize(torch.float32).t()).half()
        cos = torch.randn(8, d // 2).half()
        sin = torch.randn(8, d // 2).half()
        pos, slot = torch.tensor([3]), torch.tensor([5])
        kc = torch.zeros(8, kvh, d).half()
        vc = torch.zeros_like(kc)
        cnt = torch.zeros(1, dtype=torch.int32)
        q, y = gemv(x, mod, 8, "S", rope=(cos, sin, pos, slot, kc, vc, heads, kvh, d, cnt), split=2)
        c, sn = cos[3].float(), sin[3].float()

        def rot(t):
            t1, t2 = t[..., :d // 2].float(), t[..., d // 2:].float()
            return torch.cat([t1 * c - t2 * sn, t2 * c + t1 * sn], -1)
        qh = ref[0, :heads * d].view(heads, d)
        kh = ref[0, heads * d:(heads + kvh) * d].view(kvh, d)
        check(f"{kind}-rope-q", q[0], rot(qh))
        check(f"{kind}-rope-k", kc[5], rot(kh))
        check(f"{kind}-rope-v", vc[5], ref[0, (heads + kvh) * d:].view(kvh, d))
        assert cnt.item() == 0
    # the stored (non-planar) layouts: a 16-bit weight and int8, whose first tile is peeled off the loop (read
    # before the PDL wait); K one tile, a few tiles, and a ragged last tile
    for kk, block_k in ((256, 256), (768, 256), (1000, 256)):
        torch.manual_seed(3)
        lin = torch.nn.Linear(kk, 40, bias=False)
        xh = torch.randn(1, kk).half()
        w16 = lin.weight.detach().half()
        check(f"dense-fp16-k{kk}", gemv(xh, w16, 4, block_k, out_dtype=torch.float32), xh.float() @ w16.float().t(), 1e-4)
        q8 = Int8Linear.from_linear(lin).half()
        check(f"int8-stored-k{kk}", gemv(xh, q8, 4, block_k, out_dtype=torch.float32),
              xh.float() @ q8.dequantize(torch.float32).t(), 1e-4)
    return 0


if __name__ == "__main__":
    sys.exit(main())
