"""Quantized-linear kernels on CUDA at decode and batch sizes: which one is fastest per (method, M, shape).

Times each candidate on the Llama-3.2-1B projection shapes (fused qkv, o, gate_up, down, lm_head) for
M in 1, 16, 64, 256 and reports microseconds and effective weight bandwidth (GB/s):
    bf16 F.linear | int8: Triton GEMV, aten._weight_int8pack_mm, dequantize+matmul |
    int4: Triton GEMV, tinygemm _weight_int4pack_mm, dequantize+matmul | fp8: Triton GEMV (weight-only),
    _scaled_mm with the fused row quantization (w8a8), dequantize+matmul.

    python -m bench.compress.quant_kernels --out bench/results/quant_kernels-h100.json
"""

from __future__ import annotations

import argparse
import json
import sys

import torch
import torch.nn.functional as F

from bench._result import make_result, write_result

SHAPES = {"qkv": (3072, 2048), "o": (2048, 2048), "gate_up": (16384, 2048), "down": (2048, 8192), "lm_head": (128256, 2048)}


def bench_us(fn, iters: int = 50) -> float:
    """Median-free mean over `iters` replays of a CUDA graph of `fn` (launch overhead excluded, as in the engine)."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(10):
            fn()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (iters * 10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ms", default="1,16,64,128,256")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("error: needs a CUDA GPU")
    from lmsmith import quant as Q
    from lmsmith.quant import Fp8Linear, Int4Linear, Int8Linear

    ms = [int(m) for m in args.ms.split(",")]
    rows = []
    errors: dict[str, str] = {}
    for name, (n, k) in [(s, SHAPES[s]) for s in args.shapes.split(",")]:
        torch.manual_seed(0)
        lin = torch.nn.Linear(k, n, bias=False, device="cuda", dtype=torch.bfloat16)
        mods = {"int8": Int8Linear.from_linear(lin), "int4": Int4Linear.from_linear(lin, 128),
                "fp8": Fp8Linear.from_linear(lin) if Q.fp8_supported(torch.device("cuda")) else None}
        for m in mods.values():
            if m is not None:
                m.prepare(torch.device("cuda"), torch.bfloat16)
        for M in ms:
            x = torch.randn(M, k, device="cuda", dtype=torch.bfloat16)
            cands = {"bf16": lambda: F.linear(x, lin.weight)}
            q8, q4, f8 = mods["int8"], mods["int4"], mods["fp8"]
            if M <= 64:
                cands["int8_triton"] = lambda: q8.triton_matmul(x)
            if M <= 16:
                cands["int4_triton"] = lambda: q4.triton_matmul(x, force_triton=True)
                if f8 is not None:
                    cands["fp8_triton"] = lambda: f8.triton_matmul(x)
            if M <= 16:  # aten._weight_int8pack_mm is slow on CUDA; measured once at small M
                cands["int8_aten"] = lambda: q8.fast_matmul(x)
            cands["int4_tinygemm"] = lambda: q4.fast_matmul(x)
            if M > 16:  # the large-M path: one-launch Triton dequantize + cuBLAS
                cands["int8_dequant"] = lambda: F.linear(x, q8.fast_dequantize(x))
                cands["int4_dequant"] = lambda: F.linear(x, q4.fast_dequantize(x))
                cands["int4_torch"] = lambda: q4.reference_forward(x)  # PyTorch-ops dequantize + cuBLAS (the dispatch)
            if f8 is not None:
                cands["fp8_scaled_mm"] = lambda: f8.fast_matmul(x)
            row: dict[str, float] = {}
            for cname, fn in cands.items():
                try:
                    y = fn()
                    if y is None:
                        raise RuntimeError("kernel not applicable (returned None)")
                    row[cname] = round(bench_us(fn), 2)
                except Exception as e:  # report, keep going
                    errors[f"{name}/M{M}/{cname}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
            wbytes = {"bf16": 2 * n * k, "int8": n * k, "fp8": n * k, "int4": n * k // 2 + 8 * n * (k // 128)}
            gbs = {c: round(wbytes[c.split("_")[0]] / (us * 1e-6) / 1e9) for c, us in row.items()}
            rows.append({"shape": name, "N": n, "K": k, "M": M, "us": row, "weight_GBps": gbs})
            print(name, M, row, flush=True)
    # the raw fp8 rule: does _scaled_mm take M not a multiple of 16?
    if Q.fp8_supported(torch.device("cuda")):
        w = torch.randn(256, 512, device="cuda").to(torch.float8_e4m3fn)
        for M in (1, 17):
            a = torch.randn(M, 512, device="cuda").to(torch.float8_e4m3fn)
            try:
                torch._scaled_mm(a, w.t(), scale_a=torch.ones(M, 1, device="cuda"), scale_b=torch.ones(1, 256, device="cuda"),
                                 out_dtype=torch.bfloat16)
                errors[f"scaled_mm_rowwise_M{M}"] = "ok"
            except Exception as e:
                errors[f"scaled_mm_rowwise_M{M}"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
    result = make_result("quant_kernels", {f"{r['shape']}_M{r['M']}_{c}_us": v for r in rows for c, v in r["us"].items()},
                         device=torch.device("cuda", 0), rows=rows, errors=errors)
    print(json.dumps(errors, indent=2))
    if args.out:
        write_result(args.out, result, echo=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
