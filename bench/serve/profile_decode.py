"""Where a decode step's time goes: torch profiler over engine steps (batch 1 and a large batch), plus a
cProfile of the host side of the offline run. Writes the tables as text files.

    python -m bench.serve.profile_decode --out-dir /tmp/prof
"""

from __future__ import annotations

import argparse
import cProfile
import io
import pstats
import tempfile
import time
from pathlib import Path

import torch

from bench.common import build_model_dir, prompts, quantized_copy
from lmsmith.ops.planner import SHAPES  # noqa: E402


def profile_steps(engine, batch, out_len, path: Path, steps: int = 20) -> None:
    from torch.profiler import ProfilerActivity, profile

    from lmsmith.serve import SamplingParams

    sp = SamplingParams(max_tokens=out_len, temperature=0.0, ignore_eos=True)
    for i, p in enumerate(batch):
        engine.add_request(f"p{path.stem}{i}", p, sp)
    for _ in range(8):  # prefill and settle into decode
        engine.step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        engine.step()
    torch.cuda.synchronize()
    wall = (time.perf_counter() - t) / steps * 1000
    graphs = getattr(engine.runner, "graphs", None)
    gpu = float("nan")
    if graphs is not None and len(batch) in graphs.graphs:  # the step's graph alone, back to back
        g = graphs.graphs[len(batch)]
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(steps):
            g.replay()
        end.record()
        torch.cuda.synchronize()
        gpu = start.elapsed_time(end) / steps
    head = f"batch {len(batch)}: wall {wall:.3f} ms/step (engine.step, overlapped={engine.async_scheduling}), " \
           f"graph replay alone {gpu:.3f} ms/step; batch-1 graph {getattr(graphs, 'bs1_choice', None)} " \
           f"{getattr(graphs, 'bs1_timings', None)}\ntiles {getattr(graphs, 'tile_timings', None)}\n\n"
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step()
        torch.cuda.synchronize()
    text = head + prof.key_averages().table(sort_by="cuda_time_total", row_limit=25)
    text += "\n\n" + prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
    path.write_text(text)
    print(path.name, "\n", text[:3000], flush=True)
    while engine.has_unfinished():
        engine.step()


def whole_replay_ms(engine, tokens: int, reps: int = 20) -> float:
    """The GPU time of the prefill bucket's whole-step graph alone, back to back (nan without one): the TTFT
    less the host's share and the lm_head row and sampling that follow the graph."""
    pg = getattr(engine.runner, "prefill_graphs", None)
    n = pg.bucket(tokens) if pg is not None else None
    if n is None or pg.buckets[n].whole is None:
        return float("nan")
    g = pg.buckets[n].whole
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    g.replay()
    start.record()
    for _ in range(reps):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


def profile_prefill(engine, batch, path: Path, reps: int = 10) -> None:
    """Batch-1 prefill (the step that produces the first token) profiled alone, `reps` prompts, the prefix cache
    reset before each so every one computes its prompt: where the TTFT's GPU time goes."""
    from torch.profiler import ProfilerActivity, profile

    from lmsmith.serve import SamplingParams

    sp = SamplingParams(max_tokens=1, temperature=0.0, ignore_eos=True)

    def one(i: int) -> float:
        engine.blocks.reset_prefix_cache()
        engine.add_request(f"pf{i}", batch[i % len(batch)], sp)
        torch.cuda.synchronize()
        t = time.perf_counter()
        while engine.has_unfinished():
            engine.step()
        torch.cuda.synchronize()
        return (time.perf_counter() - t) * 1000

    for i in range(3):
        one(i)
    walls = [one(i) for i in range(reps)]
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        for i in range(reps):
            one(i)
    text = f"batch-1 prefill of {len(batch[0])} tokens + first token: wall ms {sorted(walls)}; " \
           f"whole-step graph replay alone {whole_replay_ms(engine, len(batch[0])):.3f} ms\n\n"
    text += prof.key_averages().table(sort_by="cuda_time_total", row_limit=30)
    text += "\n\n" + prof.key_averages().table(sort_by="cpu_time_total", row_limit=25)
    path.write_text(text)
    print(path.name, "\n", text[:4000], flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--out-dir", default=".")
    ap.add_argument("--bs1-only", action="store_true", help="only the batch-1 step profile (small engine, quick)")
    ap.add_argument("--int4", action="store_true", help="an int4 copy (group 128, int4 lm_head), as serve_gpu --int4")
    ap.add_argument("--prefill", action="store_true", help="with --bs1-only: also profile the batch-1 prefill")
    args = ap.parse_args()
    if args.prefill and not args.bs1_only:
        ap.error("--prefill profiles the batch-1 prefill: add --bs1-only")
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    from lmsmith.serve import LLM, SamplingParams
    from lmsmith.serve.engine import Engine

    with tempfile.TemporaryDirectory() as tmp:
        d = build_model_dir(args.shape, Path(tmp) / "model", torch.bfloat16)
        batch = prompts(256, 128, SHAPES[args.shape]["vocab_size"])
        tag = ""
        if args.int4:
            d, tag = quantized_copy(d, Path(tmp) / "int4", "int4", 128, lm_head="int4"), "_int4"
        if args.bs1_only:
            engine = Engine(str(d), dtype="bfloat16", max_num_seqs=4)
            profile_steps(engine, batch[:1], 64, out / f"prof_bs1{tag}.txt")
            if args.prefill:
                profile_prefill(engine, batch[:12], out / f"prof_prefill{tag}.txt")
            return
        engine = Engine(str(d), dtype="bfloat16", max_num_seqs=256, max_num_batched_tokens=8192)
        profile_steps(engine, batch[:1], 64, out / "prof_bs1.txt")
        profile_steps(engine, batch, 64, out / "prof_bs256.txt")
        del engine
        llm = LLM(str(d), dtype="bfloat16", max_num_seqs=256, max_num_batched_tokens=8192)
        sp = SamplingParams(max_tokens=256, temperature=0.0, ignore_eos=True)
        llm.generate(batch[:4], sp, use_tqdm=False)
        pr = cProfile.Profile()
        pr.enable()
        llm.generate(batch, sp, use_tqdm=False)
        pr.disable()
        s = io.StringIO()
        pstats.Stats(pr, stream=s).sort_stats("tottime").print_stats(30)
        (out / "cprofile_offline256.txt").write_text(s.getvalue())
        print(s.getvalue()[:6000])


if __name__ == "__main__":
    main()
