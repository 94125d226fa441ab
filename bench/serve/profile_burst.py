"""Where a burst's time to first token goes inside the engine (no HTTP): each step's wall time, what it ran
(prefill tokens, decode rows) and when each request's first token came out, for a burst from idle and a burst
that lands on running decodes, with and without piecewise prefill graphs; plus a torch-profiler table of the
burst's steps. Text and JSON under --out-dir.

    python -m bench.serve.profile_burst --out-dir /tmp/burst
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from bench.common import build_model_dir, prompts
from lmsmith.ops.planner import SHAPES


def run_burst(engine, burst: list[list[int]], out_len: int, tag: str, background: list[list[int]] | None = None,
              sync: bool = False) -> dict:
    """Add `background` (decoding already), then the burst at once; step until every burst request has its first
    token. Returns per-step records and per-request TTFT (ms, from the burst's arrival)."""
    from lmsmith.serve import SamplingParams

    sp = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(background or []):
        engine.add_request(f"{tag}-bg{i}", p, sp)
    for _ in range(6 if background else 0):  # into steady decode
        engine.step()
    t0 = time.perf_counter()
    ids = [f"{tag}-{i}" for i in range(len(burst))]
    for rid, p in zip(ids, burst):
        engine.add_request(rid, p, sp)
    t_added = (time.perf_counter() - t0) * 1000
    first: dict[str, float] = {}
    steps = []
    while len(first) < len(ids):
        sched = engine.scheduler
        pre = (len(sched.waiting), len(sched.running))
        s0 = time.perf_counter()
        outs = engine.step()
        if sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        for o in outs:
            if o.request_id in ids and o.request_id not in first:
                first[o.request_id] = (now - t0) * 1000
        steps.append({"ms": round((now - s0) * 1000, 3), "at_ms": round((now - t0) * 1000, 3),
                      "waiting_before": pre[0], "running_before": pre[1], "first_tokens": sum(
                          1 for o in outs if o.request_id in ids and len(o.token_ids) == len(o.new_token_ids))})
        if len(steps) > 400:
            break
    for rid in list(ids) + [f"{tag}-bg{i}" for i in range(len(background or []))]:
        engine.abort(rid)
    while engine.has_unfinished():
        engine.step()
    torch.cuda.synchronize()
    ttft = sorted(first.values())
    return {"tag": tag, "sync": sync, "add_ms": round(t_added, 3), "steps": steps,
            "ttft_p50_ms": round(statistics.median(ttft), 2) if ttft else None,
            "ttft_max_ms": round(ttft[-1], 2) if ttft else None, "ttft_ms": [round(x, 2) for x in ttft]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--burst", type=int, default=32)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--graphs", nargs="+", default=["0", "1"], help="LMSMITH_PREFILL_GRAPHS values to run")
    args = ap.parse_args()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from torch.profiler import ProfilerActivity, profile

    from lmsmith.serve.engine import Engine

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        d = build_model_dir(args.shape, Path(tmp) / "model", torch.bfloat16)
        vocab = SHAPES[args.shape]["vocab_size"]
        pool = prompts(8 * args.burst, args.prompt_len, vocab, seed=1)
        for graphs in args.graphs:
            os.environ["LMSMITH_PREFILL_GRAPHS"] = graphs
            t = time.perf_counter()
            engine = Engine(str(d), dtype="bfloat16", max_num_seqs=64,
                            max_num_batched_tokens=args.max_num_batched_tokens)
            load_s = time.perf_counter() - t
            n = args.burst
            run_burst(engine, pool[:n], 16, f"warm{graphs}")  # compiles, allocator, first graphs
            for k, (bg, sync) in enumerate([(None, False), (None, True), (pool[n:2 * n], False)]):
                burst = pool[(2 + k) * n:(3 + k) * n]
                r = run_burst(engine, burst, 64, f"g{graphs}-{k}", background=bg, sync=sync)
                r.update(graphs=graphs, background=len(bg or []), load_s=round(load_s, 1))
                results.append(r)
                print(json.dumps({x: r[x] for x in r if x not in ("steps", "ttft_ms")}),
                      [(s["ms"], s["waiting_before"], s["first_tokens"]) for s in r["steps"][:12]], flush=True)
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
                run_burst(engine, pool[6 * n:7 * n], 8, f"prof{graphs}", sync=True)
            text = prof.key_averages().table(sort_by="cpu_time_total", row_limit=40)
            text += "\n\n" + prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
            (out / f"burst_prof_graphs{graphs}.txt").write_text(text)
            engine.close()
            del engine
            torch.cuda.empty_cache()
    (out / "burst.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
