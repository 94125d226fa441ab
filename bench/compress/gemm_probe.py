"""Batch-1 decode GEMMs of a model shape, each way we could run them, timed inside CUDA graphs (launch cost
excluded, as in the decode graph): cuBLAS through F.linear / torch.mm on the transposed weight, and a Triton
GEMV over a few tile shapes. Prints microseconds and TB/s (of the weight bytes as stored) per (projection, variant).
`--weights int4,int8`: the same projections quantized (int4 group `--group-size`): the quantized linear's own
kernel (tinygemm / the int8 Triton GEMV) against the batch-1 GEMV reading the stored weight, over its tiles.

    python -m bench.compress.gemm_probe --shape llama-3.2-1b --weights bf16,int4,int8 --out /tmp/gemm.json
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from bench._result import make_result, write_result
from lmsmith.ops.planner import SHAPES  # noqa: E402
from lmsmith.quant import Int4Linear, Int8Linear  # noqa: E402
from lmsmith.serve.gemv import CANDIDATE_TILES, _call  # noqa: E402


def timed(fn, reps: int = 50) -> float:
    """Microseconds per call, from a graph of `reps` calls (rotating through weight copies beats the L2)."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(reps):
            fn()
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) * 1000 / (5 * reps)


def quantized(w: torch.Tensor, kind: str, group: int):
    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    lin.weight.data.copy_(w)
    q = Int4Linear.from_linear(lin, group) if kind == "int4" else Int8Linear.from_linear(lin)
    q.prepare(w.device, w.dtype)
    return q


def kernel_report() -> None:
    """Registers and spills of each compiled GEMV variant (Triton's cache of the kernel; best effort)."""
    from lmsmith.serve import gemv as G

    try:
        for caches in G._gemv_kernel.device_caches.values():
            for _key, ck in caches[0].items():
                ck._init_handles()
                names = ck.src.fn.arg_names
                consts = {}
                for k, v in ck.src.constants.items():  # keyed by name or by (argument index,)
                    i = k[0] if isinstance(k, tuple) else k
                    consts[names[i] if isinstance(i, int) else i] = v
                tag = {k: consts.get(k) for k in ("WQ", "GROUP", "BLOCK_N", "BLOCK_K", "SILU", "NORM", "ROPE")}
                print(f"gemv kernel {tag} warps={ck.metadata.num_warps} regs={ck.n_regs} spills={ck.n_spills} "
                      f"shared={ck.metadata.shared}", flush=True)
    except Exception as e:  # Triton internals differ between versions
        print(f"kernel report unavailable: {type(e).__name__}: {e}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--weights", default="bf16", help="comma list of bf16, int4, int8")
    ap.add_argument("--group-size", type=int, default=128, help="int4 group size")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    s = SHAPES[args.shape]
    h, inter = s["hidden_size"], s["intermediate_size"]
    heads = s["num_attention_heads"]
    kv = s.get("num_key_value_heads", heads)
    d = h // heads
    shapes = {"qkv": ((heads + 2 * kv) * d, h), "o_proj": (h, h), "gate_up": (2 * inter, h), "down": (h, inter),
              "lm_head": (s["vocab_size"], h)}
    results: dict[str, float] = {}
    for kind in args.weights.split(","):
        for name, (n, k) in shapes.items():
            stored = n * k * {"bf16": 2, "int8": 1, "int4": 0.5}[kind]
            copies = max(1, int(200e6 // stored))  # > L2 (50-60 MB) between reuses of one weight
            ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
            x = torch.randn(args.batch, k, device="cuda", dtype=torch.bfloat16)
            it = {"i": 0}

            def nxt(lst):
                it["i"] = (it["i"] + 1) % copies
                return lst[it["i"]]

            if kind == "bf16":
                wts = [w.t().contiguous() for w in ws]
                ref = F.linear(x, ws[0]).float()
                variants = {"F.linear": lambda: F.linear(x, nxt(ws)), "mm_wT_contig": lambda: torch.mm(x, nxt(wts))}
                tiles = [(4, 1024, 4), (2, 2048, 4), (8, 1024, 8), (4, 2048, 8), (2, 1024, 2), (1, 2048, 4)]
            else:
                qs = [quantized(w, kind, args.group_size) for w in ws]
                ws = qs  # the bf16 copies are freed here
                ref = F.linear(x, qs[0].dequantize(torch.float32).to(x.dtype)).float()
                own = (lambda: nxt(qs).fast_matmul(x)) if kind == "int4" else (lambda: nxt(qs).triton_matmul(x))
                variants = {"tinygemm" if kind == "int4" else "wq_triton": own}
                table = CANDIDATE_TILES[kind]
                tiles = table.get(name, table["*"])
            for tile in tiles:
                variants["triton_gemv_" + "x".join(map(str, tile))] = (lambda tile=tile: _call(x, nxt(ws), tile))
            for vname, fn in variants.items():
                try:
                    it["i"] = copies - 1
                    got = fn().float()
                    err = ((got - ref).norm() / ref.norm()).item()
                    if err > 1e-2:
                        print(f"{name} {kind} {vname}: wrong result (rel err {err:.3g})", flush=True)
                        continue
                    us = timed(fn)
                except Exception as e:  # a tile shape that does not fit: report, keep going
                    print(f"{name} {kind} {vname}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                    continue
                tbs = stored / (us * 1e-6) / 1e12
                results[f"{name}.{vname}.us" if kind == "bf16" else f"{name}.{kind}.{vname}.us"] = round(us, 2)
                print(f"{name:8s} {kind:4s} [{n}x{k}] {vname:22s} {us:8.2f} us  {tbs:5.2f} TB/s", flush=True)
            ws = variants = None  # free this shape's weights before the next
            torch.cuda.empty_cache()
    kernel_report()
    out = make_result("gemm_probe", results, device=torch.device("cuda"), extra_versions=("triton",),
                      workload={"shape": args.shape, "batch": args.batch, "weights": args.weights,
                                "int4_group_size": args.group_size})
    if args.out:
        write_result(args.out, out, echo=False)


if __name__ == "__main__":
    main()
