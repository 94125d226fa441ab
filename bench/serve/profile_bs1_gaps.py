"""Where a batch-1 decode token's time goes outside the captured step (CUDA): one 128-token prompt, 256 greedy
tokens through `LLM.generate`, under torch.profiler; prints the GPU's busy time against the wall time, the copies
between steps (count, total) and the largest idle gaps on the GPU between operations.

`decode_bs1_tok_s` counts the whole request, so what the step's replay time does not explain (per token: prefill
share, input copy, token read-back, the host) is the gap between ~76% of copy bandwidth by replay and ~74% measured.

    python -m bench.serve.profile_bs1_gaps [--shape llama-3.2-1b] [--gemv] [--ab N]    # ~40 s on an H100

`--ab N` first times N requests each with the device-side input advance on, off (a copy in and out every step)
and on with the garbage collector off, alternated in one process on the same captured graphs.
"""

from __future__ import annotations

import argparse
import gc
import os
import tempfile
import time
from pathlib import Path

import torch

from bench.common import build_model_dir, prompts


def gpu_intervals(prof) -> list[tuple[float, float, str]]:
    """(start us, end us, name) of every kernel and copy the profiler saw on the device, in start order."""
    out = []
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start:
            out.append((e.time_range.start, e.time_range.end, e.name))
    return sorted(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="llama-3.2-1b")
    ap.add_argument("--gemv", action="store_true", help="tune the batch-1 GEMV plans (slower start; default: cuBLAS)")
    ap.add_argument("--ab", type=int, default=0, metavar="N",
                    help="first time N requests each with the device-side input advance on and off, alternated")
    ap.add_argument("--out", help="result JSON (benchmark serve_bs1_gaps): the A/B medians, copies and idle time")
    args = ap.parse_args()
    metrics: dict[str, float] = {}
    if not args.gemv:
        os.environ["LMSMITH_DECODE_GEMV"] = "0"
    from lmsmith.ops.planner import SHAPES
    from lmsmith.serve import LLM, SamplingParams

    with tempfile.TemporaryDirectory() as tmp:
        d = build_model_dir(args.shape, Path(tmp) / "model", torch.bfloat16)
        llm = LLM(str(d), dtype="bfloat16")
        sp = SamplingParams(max_tokens=256, temperature=0.0, ignore_eos=True)
        ps = prompts(3, 128, SHAPES[args.shape]["vocab_size"])
        llm.generate([ps[0]], sp, use_tqdm=False)
        graphs = llm.engine.runner.graphs
        step = graphs.step
        if args.ab and step is not None:
            times = {"advance": [], "copy": [], "advance-gc-off": []}
            for i in range(3 * args.ab):
                mode = list(times)[i % 3]
                graphs.step, graphs.last = (step if mode != "copy" else None), None
                if mode.endswith("gc-off"):
                    gc.disable()
                t = time.perf_counter()
                llm.generate([ps[1]], sp, use_tqdm=False)
                times[mode].append(1000 * (time.perf_counter() - t) / 256)
                gc.enable()
            graphs.step, graphs.last = step, None
            med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
            metrics |= {f"ms_per_token_{k.replace('-', '_')}": round(v, 4) for k, v in med.items()}
            print("A/B ms a token (median of %d): " % args.ab + ", ".join(f"{k} {v:.4f}" for k, v in med.items())
                  + f"; all: {times}", flush=True)
        print(f"plan {graphs.bs1_choice}; input advance {'on' if step is not None else 'off'}; "
              f"copies skipped so far {graphs.copies_skipped}", flush=True)
        t = time.perf_counter()
        llm.generate([ps[1]], sp, use_tqdm=False)
        wall = time.perf_counter() - t
        print(f"plain: {256 / wall:.1f} tok/s, {1000 * wall / 256:.4f} ms a token", flush=True)
        metrics["plain_ms_per_token"] = round(1000 * wall / 256, 4)
        acts = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
        with torch.profiler.profile(activities=acts) as prof:
            t = time.perf_counter()
            llm.generate([ps[2]], sp, use_tqdm=False)
            torch.cuda.synchronize()
            pwall = time.perf_counter() - t
    ivs = gpu_intervals(prof)
    span = ivs[-1][1] - ivs[0][0]
    busy, end = 0.0, ivs[0][0]
    gaps = []
    for s, e, name in ivs:
        if s > end:
            gaps.append((s - end, name))
        busy += max(0.0, e - max(s, end))
        end = max(end, e)
    copies = [(e - s, n) for s, e, n in ivs if "Memcpy" in n or "memcpy" in n]
    print(f"profiled: wall {1000 * pwall:.1f} ms; GPU span {span / 1000:.1f} ms, busy {busy / 1000:.1f} ms "
          f"({busy / span:.1%}); idle gaps {len(gaps)} totalling {sum(g for g, _ in gaps) / 1000:.2f} ms "
          f"({sum(g for g, _ in gaps) / 256:.1f} us a token)")
    print(f"copies: {len(copies)}, {sum(c for c, _ in copies) / 1000:.2f} ms; by kind: "
          + ", ".join(f"{k} x{sum(1 for _, n in copies if k in n)}" for k in ("HtoD", "DtoH", "DtoD")))
    big = sorted(gaps, reverse=True)[:12]
    print("largest idle gaps (us, the operation after): " + "; ".join(f"{g:.1f} {n[:40]}" for g, n in big))
    after: dict[str, list[float]] = {}
    for g, n in gaps:
        after.setdefault(n[:40], []).append(g)
    top = sorted(after.items(), key=lambda kv: -sum(kv[1]))[:8]
    print("idle before (us total / count): " + "; ".join(f"{n} {sum(v):.0f}/{len(v)}" for n, v in top))
    hist = {k: sum(1 for g, _ in gaps if lo <= g < hi) for k, (lo, hi) in
            {"<2us": (0, 2), "2-5": (2, 5), "5-10": (5, 10), "10-50": (10, 50), "50+": (50, 1e12)}.items()}
    print(f"gap sizes: {hist}")
    metrics |= {"profiled_idle_us_per_token": round(sum(g for g, _ in gaps) / 256, 2), "copies": len(copies),
                "gaps_over_50us": hist["50+"]}
    if args.out:
        from bench._result import make_result, write_result

        write_result(args.out, make_result("serve_bs1_gaps", metrics, torch.device("cuda", 0),
                                           plan=graphs.bs1_choice, advance=step is not None))
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=12, max_name_column_width=50))


if __name__ == "__main__":
    main()
