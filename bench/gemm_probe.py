"""Batch-1 decode GEMMs of a model shape, each way we could run them, timed inside CUDA graphs (launch cost
excluded, as in the decode graph): cuBLAS through F.linear / torch.mm on the transposed weight, and a Triton
GEMV over a few tile shapes. Prints microseconds and TB/s per (projection, variant).

    python bench/gemm_probe.py --shape llama-3.2-1b --out /tmp/gemm.json
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from lmsmith.ops.planner import SHAPES  # noqa: E402
from lmsmith.serve.gemv import gemv  # noqa: E402
from lmsmith.serve.paged_decode import triton  # noqa: E402


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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--batch", type=int, default=1)
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
    for name, (n, k) in shapes.items():
        copies = max(1, int(200e6 // (n * k * 2)))  # > L2 (50 MB) between reuses of one weight
        ws = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02 for _ in range(copies)]
        wts = [w.t().contiguous() for w in ws]
        x = torch.randn(args.batch, k, device="cuda", dtype=torch.bfloat16)
        it = {"i": 0}

        def nxt(lst):
            it["i"] = (it["i"] + 1) % copies
            return lst[it["i"]]

        variants = {
            "F.linear": lambda: F.linear(x, nxt(ws)),
            "mm_wT_contig": lambda: torch.mm(x, nxt(wts)),
        }
        for bn, bk, nw in ((4, 1024, 4), (2, 2048, 4), (8, 1024, 8), (4, 2048, 8), (2, 1024, 2), (1, 2048, 4)):
            variants[f"triton_gemv_{bn}x{bk}w{nw}"] = (lambda bn=bn, bk=bk, nw=nw: gemv(x, nxt(ws), bn, bk, num_warps=nw))
        ref = F.linear(x, ws[0]).float()
        for vname, fn in variants.items():
            try:
                if vname.startswith("triton"):
                    it["i"] = copies - 1
                    got = fn().float()
                    err = ((got - ref).norm() / ref.norm()).item()
                    if err > 1e-2:
                        print(f"{name} {vname}: wrong result (rel err {err:.3g})", flush=True)
                        continue
                us = timed(fn)
            except Exception as e:  # a tile shape that does not fit: report, keep going
                print(f"{name} {vname}: {type(e).__name__}: {str(e)[:200]}", flush=True)
                continue
            tbs = n * k * 2 / (us * 1e-6) / 1e12
            results[f"{name}.{vname}.us"] = round(us, 2)
            print(f"{name:8s} [{n}x{k}] {vname:22s} {us:8.2f} us  {tbs:5.2f} TB/s", flush=True)
        del ws, wts
        torch.cuda.empty_cache()
    out = {"benchmark": "gemm_probe", "device": torch.cuda.get_device_name(),
           "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": "python " + " ".join(sys.argv),
           "versions": {"torch": torch.__version__, "triton": getattr(triton, "__version__", None)},
           "metrics": results, "workload": {"shape": args.shape, "batch": args.batch, "dtype": "bfloat16"}}
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
