"""int4 / int8 batch-1 decode on the planar GEMV (issue 26 target 2): kernels, engine, quality, in one GPU call.

Order: the engine methods (3, 4); the matrices (1, 2) of `--shape` right after int4_old; those of `--shape-8b` at
the end; each started only while `--budget-s` lasts, and each writes the result file again (a call cut short
still leaves what it measured).
  1. correctness: every new kernel (planar int4 / int8, split-K) against the fp32 math on the dequantized weight,
     on the real projection shapes of `--shape` and `--shape-8b`;
  2. per-matrix GEMV microseconds (CUDA-graph replays, weights rotated past the L2): torch bf16 (cuBLAS), int4
     tinygemm (`_weight_int4pack_mm`), our GEMV on the stored layout (round 1) and on the planar layout (new),
     int8 Triton GEMM / stored-layout GEMV / planar GEMV; both shapes;
  3. the engine (LLM offline API, CUDA graphs, batch 1): decode tok/s of bf16, int4 (planar), int4-old
     (LMSMITH_GEMV_PLANAR=0: round 1's kernels), int8, int8-old and int4 + int8 lm_head, side by side;
  4. quality of the decode path: each engine's greedy continuation re-scored by a prefill of the same checkpoint
     (tinygemm / cuBLAS, no GEMV): top-1 agreement and the mean |logprob| difference of the chosen tokens, plus
     the batch-1 step's relative logit error vs the model's own step (captured at engine start).

    python -m bench.compress.int4_decode --out bench/results/int4_decode-h100.json     # GPU, ~4 minutes
    python -m bench.compress.int4_decode --dry-run                                     # CPU: tiny shapes, exits
"""

from __future__ import annotations

import argparse
import copy
import gc
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from bench._result import make_result, write_result
from bench.common import RESULTS, prompts

T0 = time.perf_counter()


def elapsed() -> float:
    return time.perf_counter() - T0


def log(msg: str) -> None:
    print(f"[{elapsed():6.1f}s] {msg}", file=sys.stderr, flush=True)


def projections(shape: str) -> dict[str, tuple[int, int]]:
    """(N, K) of the five batch-1 matmuls of a planner shape (q|k|v and gate|up fused, as the engine runs them)."""
    from lmsmith.ops.planner import SHAPES

    s = SHAPES[shape]
    h, inter, heads, kv = s["hidden_size"], s["intermediate_size"], s["num_attention_heads"], s["num_key_value_heads"]
    d = h // heads
    return {"qkv": ((heads + 2 * kv) * d, h), "o_proj": (h, heads * d), "gate_up": (2 * inter, h),
            "down": (h, inter), "lm_head": (s["vocab_size"], h)}


TINY_PROJ = {"qkv": (384, 256), "o_proj": (256, 256), "gate_up": (1024, 256), "down": (256, 512), "lm_head": (1000, 256)}


# ----------------------------------------------------------------------------- kernels
def graph_us(fn, copies: list, reps: int) -> float:
    """Microseconds per call of fn(copy), cycling through the copies inside one CUDA graph of `reps` calls."""
    for c in copies:  # compiles, builds lazy layouts and split-K counters outside the capture
        fn(c)
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for i in range(reps):
            fn(copies[i % len(copies)])
    g.replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(5):
        g.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1000 / (5 * reps)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def quantized(w: torch.Tensor, kind: str, group: int):
    from lmsmith.quant import Int4Linear, Int8Linear

    lin = torch.nn.Linear(w.shape[1], w.shape[0], bias=False, device=w.device, dtype=w.dtype)
    lin.weight.data.copy_(w)
    return Int4Linear.from_linear(lin, group) if kind == "int4" else Int8Linear.from_linear(lin)


def matrix_phase(shape: str, proj: dict[str, tuple[int, int]], device: torch.device, group: int,
                 time_it: bool, rotate_mb: int, metrics: dict, details: dict) -> None:
    """Correctness of every new tile vs fp32 math (and the round-1 kernels' error for scale), then timings."""
    from lmsmith.serve.gemv import CANDIDATE_TILES, _call, planar_tiles

    tag = shape.replace("llama-", "").replace(".", "")
    torch.manual_seed(0)
    for name, (n, k) in proj.items():
        w = (torch.randn(n, k, device=device) * 0.02).to(torch.bfloat16)
        x = torch.randn(1, k, device=device).to(torch.bfloat16)
        row: dict[str, object] = {}
        if time_it:
            nbytes = n * k * 2
            copies = [w] + [w.clone() for _ in range(max(0, min(16, math.ceil(rotate_mb * 2**20 / nbytes)) - 1))]
            row["bf16_cublas_us"] = round(graph_us(lambda c: F.linear(x, c), copies, 32), 2)
        for kind in ("int4", "int8"):
            if kind == "int4" and name == "lm_head":
                continue  # int4 models keep a 16-bit or int8 head
            q = quantized(w, kind, group)
            q.prepare(device, torch.bfloat16)
            ref = x.float() @ q.dequantize(torch.float32).t()
            glu = False
            kw = {"out_dtype": torch.float32}
            tiles = {"planar": planar_tiles(name, kind), "stored": CANDIDATE_TILES[kind]["*"]}
            ok_tiles = []
            for family, cands in tiles.items():
                for tile in cands:
                    key = f"{kind}_{family}_{'x'.join(map(str, tile))}"
                    try:
                        err = rel(_call(x, q, tile, glu=glu, **kw), ref)
                    except Exception as e:  # noqa: BLE001 - a tile that cannot run here is reported
                        row[key + "_error"] = f"{type(e).__name__}: {e}"[:160]
                        continue
                    row[key + "_rel_err"] = float(f"{err:.3g}")
                    ok_tiles.append((key, tile))
                    if family == "planar":
                        metrics[f"{tag}_{name}_{kind}_planar_max_rel_err"] = max(
                            metrics.get(f"{tag}_{name}_{kind}_planar_max_rel_err", 0.0), float(f"{err:.3g}"))
            try:
                own = q.fast_matmul(x) if kind == "int4" else q.triton_matmul(x)
            except Exception as e:  # noqa: BLE001 - e.g. no int8 Triton GEMM in the interpreter
                own, row[f"{kind}_own_error"] = None, f"{type(e).__name__}: {e}"[:160]
            if own is not None:
                row[f"{kind}_own_rel_err"] = float(f"{rel(own, ref):.3g}")
            if time_it:  # copies made once, every layout already built (planar, tinygemm): rotated past the L2
                ncopy = max(1, min(16, math.ceil(rotate_mb * 2**20 / q.qweight.numel())))
                qc = [q] + [copy.deepcopy(q) for _ in range(ncopy - 1)]
                for key, tile in ok_tiles:
                    try:
                        row[key + "_us"] = round(graph_us(lambda c, t=tile: _call(x, c, t, **kw), qc, 32), 2)
                    except Exception as e:  # noqa: BLE001
                        row[key + "_time_error"] = f"{type(e).__name__}: {e}"[:160]
                if own is not None:
                    fn = (lambda c: c.fast_matmul(x)) if kind == "int4" else (lambda c: c.triton_matmul(x))
                    row[f"{kind}_own_us"] = round(graph_us(fn, qc, 32), 2)  # tinygemm / the int8 Triton GEMM
                del qc
            del q
            gc.collect()
        if time_it:
            for kind in ("int4", "int8"):
                for family in ("planar", "stored"):
                    us = [v for kk, v in row.items() if kk.startswith(f"{kind}_{family}_") and kk.endswith("_us")]
                    if us:
                        row[f"{kind}_{family}_best_us"] = min(us)
                        metrics[f"{tag}_{name}_{kind}_{family}_us"] = min(us)
                if f"{kind}_own_us" in row:
                    metrics[f"{tag}_{name}_{kind}_own_us"] = row[f"{kind}_own_us"]
            metrics[f"{tag}_{name}_bf16_us"] = row["bf16_cublas_us"]
            best = row.get("int4_planar_best_us")
            if best:
                metrics[f"{tag}_{name}_int4_planar_tb_s"] = round(n * k / 2 / (best * 1e-6) / 1e12, 3)
        details[f"{tag}/{name}"] = row
        log(f"{tag} {name}: " + ", ".join(f"{k2}={v}" for k2, v in row.items() if k2.endswith(("best_us", "own_us", "cublas_us"))))
        del w
        torch.cuda.empty_cache() if device.type == "cuda" else None
    if time_it:  # one decoder layer's four body matmuls, and the body of the whole model, per format
        body = ("qkv", "o_proj", "gate_up", "down")
        for fmt in ("bf16", "int4_own", "int4_stored", "int4_planar", "int8_own", "int8_stored", "int8_planar"):
            vals = [metrics.get(f"{tag}_{nm}_{fmt}_us") for nm in body]
            if all(v is not None for v in vals):
                metrics[f"{tag}_layer_body_{fmt}_us"] = round(sum(vals), 2)


# ----------------------------------------------------------------------------- engine
METHODS = {  # name: (checkpoint: body[:head], LMSMITH_GEMV_PLANAR)
    "bf16": ("bf16", "1"), "int4": ("int4", "1"), "int4_old": ("int4", "0"), "int8": ("int8", "1"),
    "int8_old": ("int8", "0"), "int4_int8head": ("int4:int8", "1"),
}


def checkpoints(src: Path, tmp: Path, wanted: set[str], group: int, device: str) -> dict[str, Path]:
    from lmsmith.models import load_model
    from lmsmith.quant import quantize_model_
    from lmsmith.quant.format import save_quantized

    dirs = {"bf16": src}
    for ck in sorted(wanted - {"bf16"}):
        body, _, head = ck.partition(":")
        model = load_model(str(src), dtype="bfloat16", device=device)
        spec = quantize_model_(model, body, group if body == "int4" else None, lm_head_method=head or None)
        dirs[ck] = save_quantized(model, src, tmp / ck.replace(":", "_"), spec, dtype=torch.bfloat16)
        del model
        gc.collect()
    return dirs


def engine_run(model_dir: Path, planar: str, prompt_len: int, new_tokens: int, repeats: int, device: str,
               check_tokens: int, scorer_cache: dict) -> dict:
    """Batch-1 decode tok/s (median of `repeats` single-prompt runs after warm-ups) and the decode-vs-prefill check."""
    from lmsmith.serve import LLM, SamplingParams
    from lmsmith.serve.scoring import Scorer

    os.environ["LMSMITH_GEMV_PLANAR"] = planar
    t = time.perf_counter()
    llm = LLM(str(model_dir), dtype="bfloat16", device=device, max_num_seqs=1)
    start_s = time.perf_counter() - t
    vocab = llm.engine.vocab_size
    sp = SamplingParams(max_tokens=new_tokens, temperature=0.0, ignore_eos=True)
    for p in prompts(2, prompt_len, vocab, seed=123):  # warm-up
        llm.generate([p], sp, use_tqdm=False)
    rates, ttfts = [], []
    for p in prompts(repeats, prompt_len, vocab, seed=0):
        llm.engine.blocks.reset_prefix_cache()
        t = time.perf_counter()
        res = llm.generate([p], sp, use_tqdm=False)
        dt = time.perf_counter() - t
        rates.append(len(res[0].outputs[0].token_ids) / dt)
        if getattr(res[0], "ttft", None) is not None:
            ttfts.append(res[0].ttft)
    graphs = getattr(llm.engine.runner, "graphs", None)
    out = {"tok_s": statistics.median(rates), "runs": [round(r, 1) for r in rates], "engine_start_s": round(start_s, 1),
           "ttft_ms": 1000 * statistics.median(ttfts) if ttfts else float("nan"),
           "bs1_choice": getattr(graphs, "bs1_choice", None), "bs1_replay_ms": getattr(graphs, "bs1_timings", None),
           "bs1_rel_err": getattr(graphs, "bs1_errors", None), "tiles_ms": getattr(graphs, "tile_timings", None)}
    if check_tokens:
        prompt = prompts(1, 32, vocab, seed=5)[0]
        lp = llm.generate([prompt], SamplingParams(max_tokens=check_tokens, temperature=0.0, ignore_eos=True, logprobs=1),
                          use_tqdm=False)[0].outputs[0]
        llm.close()
        del llm
        gc.collect()
        torch.cuda.empty_cache() if device == "cuda" else None
        key = str(model_dir)
        if key not in scorer_cache:
            scorer_cache.clear()
            gc.collect()
            scorer_cache[key] = Scorer(key, dtype="bfloat16", device=device)
        ids = prompt + list(lp.token_ids)
        logits = scorer_cache[key].logits(ids)[len(prompt) - 1:-1]  # the prediction of every generated token
        logp = torch.log_softmax(logits.float(), -1)
        toks = torch.tensor(lp.token_ids, device=logits.device)
        decode_lp = torch.tensor([r["logprob"] for r in lp.logprobs], device=logits.device)
        out["decode_vs_prefill_top1_pct"] = round(100 * (logits.argmax(-1) == toks).float().mean().item(), 2)
        out["decode_vs_prefill_logprob_mae"] = float(f"{(logp.gather(-1, toks[:, None])[:, 0] - decode_lp).abs().mean().item():.4g}")
        # the prefill's perplexity of the continuation the decode path chose (equal across int4 kernels if the
        # kernels agree; a broken kernel picks tokens the model itself finds unlikely)
        out["prefill_ppl_of_greedy"] = round(math.exp(-logp.gather(-1, toks[:, None]).mean().item()), 4)
    else:
        llm.close()
        del llm
    gc.collect()
    torch.cuda.empty_cache() if device == "cuda" else None
    return out


def engine_phase(args, device: str, metrics: dict, details: dict, save, after: dict | None = None) -> None:
    """Every method of --methods in order; `after[m]()` runs once method m is done (the rest at the end)."""
    from bench.common import build_model_dir

    after = dict(after or {})

    methods = [m for m in args.methods.split(",") if m]
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; choose from {', '.join(METHODS)}")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.dry_run:
            from lmsmith.tiny import build_tiny

            src = build_tiny(tmp / "bf16", "llama", hidden_size=128, intermediate_size=256)
        else:
            src = build_model_dir(args.shape, tmp / "bf16", torch.bfloat16)
        dirs = checkpoints(src, tmp, {METHODS[m][0] for m in methods}, args.group_size, device)
        log(f"checkpoints written: {sorted(dirs)}")
        scorers: dict = {}
        for m in methods:
            if elapsed() > args.budget_s - 60:  # an engine takes up to ~60 s (start with kernel tuning, runs, check)
                details.setdefault("skipped", []).append(m)
                log(f"engine {m}: skipped (time budget {args.budget_s} s spent)")
                if m in after:
                    after.pop(m)()
                continue
            ck, planar = METHODS[m]
            try:
                r = engine_run(dirs[ck], planar, args.prompt_len, args.new_tokens, args.repeats, device,
                               args.check_tokens, scorers)
            except Exception as e:  # noqa: BLE001 - the other methods still run
                details[f"engine_{m}_error"] = f"{type(e).__name__}: {e}"[:300]
                log(f"engine {m}: FAILED {type(e).__name__}: {e}")
                if m in after:
                    after.pop(m)()
                continue
            details[f"engine_{m}"] = r
            metrics[f"decode_bs1_tok_s_{m}"] = round(r["tok_s"], 2)
            metrics[f"ttft_ms_{m}"] = round(r["ttft_ms"], 2)
            wall = args.new_tokens / r["tok_s"]
            metrics[f"decode_only_bs1_tok_s_{m}"] = round((args.new_tokens - 1) / max(wall - r["ttft_ms"] / 1000, 1e-9), 2)
            chosen = (r.get("bs1_replay_ms") or {}).get(r.get("bs1_choice"))
            if isinstance(chosen, (int, float)):
                metrics[f"bs1_step_replay_ms_{m}"] = chosen
            err = (r.get("bs1_rel_err") or {}).get(r.get("bs1_choice"))
            if err is not None:
                metrics[f"bs1_step_logit_rel_err_{m}"] = err
            for k in ("decode_vs_prefill_top1_pct", "decode_vs_prefill_logprob_mae", "prefill_ppl_of_greedy"):
                if k in r:
                    metrics[f"{k}_{m}"] = r[k]
            log(f"engine {m}: {r['tok_s']:.1f} tok/s (runs {r['runs']}), step {r.get('bs1_choice')}, "
                f"start {r['engine_start_s']} s, check {[r.get(k) for k in ('decode_vs_prefill_top1_pct', 'prefill_ppl_of_greedy')]}")
            ratios(metrics)
            save()
            if m in after:
                after.pop(m)()
        for job in after.values():
            job()
        scorers.clear()


def ratios(metrics: dict) -> None:
    base = metrics.get("decode_bs1_tok_s_bf16")
    base_only = metrics.get("decode_only_bs1_tok_s_bf16")
    for m in METHODS:
        if m == "bf16":
            continue
        if base and f"decode_bs1_tok_s_{m}" in metrics:
            metrics[f"{m}_vs_bf16"] = round(metrics[f"decode_bs1_tok_s_{m}"] / base, 3)
        if base_only and f"decode_only_bs1_tok_s_{m}" in metrics:
            metrics[f"{m}_decode_only_vs_bf16"] = round(metrics[f"decode_only_bs1_tok_s_{m}"] / base_only, 3)


# ----------------------------------------------------------------------------- main
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 epilog="\n".join(__doc__.splitlines()[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b")
    ap.add_argument("--shape-8b", default="llama-3.1-8b", help="second shape for the per-matrix phase ('' skips it)")
    ap.add_argument("--methods", default="bf16,int4,int8,int4_old,int4_int8head,int8_old",
                    help=f"engine methods, in order (the time budget may cut the tail): {', '.join(METHODS)}")
    ap.add_argument("--group-size", type=int, default=128)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--check-tokens", type=int, default=64, help="greedy tokens re-scored by a prefill (0: skip)")
    ap.add_argument("--rotate-mb", type=int, default=192, help="weight copies cycled per timing (beats the L2)")
    ap.add_argument("--skip-matrices", action="store_true")
    ap.add_argument("--skip-engine", action="store_true")
    ap.add_argument("--budget-s", type=float, default=240.0,
                    help="seconds: engine methods start only before budget - 60, matrix shapes before budget")
    ap.add_argument("--dry-run", action="store_true", help="CPU, tiny shapes: check that everything but the GPU timing runs")
    ap.add_argument("--out", default=None, help="file, or folder for int4_decode-<gpu>.json (default bench/results/)")
    args = ap.parse_args()

    from lmsmith.serve.paged_decode import triton

    cuda = torch.cuda.is_available()
    if not cuda and not args.dry_run:
        sys.exit("error: needs a CUDA GPU (or --dry-run on CPU)")
    device = torch.device("cuda" if cuda and not args.dry_run else "cpu")
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    name = "int4_decode-dry.json" if args.dry_run else f"int4_decode-{torch.cuda.get_device_name().split()[1].lower()}.json"
    out = args.out or str((Path(tempfile.gettempdir()) if args.dry_run else RESULTS) / name)
    if Path(out).is_dir() or out.endswith("/"):  # a folder (the device's $OUT): the file named after the GPU
        out = str(Path(out) / name)
    metrics: dict = {}
    details: dict = {}

    def save() -> None:
        write_result(out, make_result("int4_decode", dict(sorted(metrics.items())), device, shape=args.shape,
                                      shape_8b=args.shape_8b, int4_group_size=args.group_size, prompt_len=args.prompt_len,
                                      new_tokens=args.new_tokens, engine="LLM offline API, CUDA graphs, batch 1",
                                      extra_versions=("triton",), details=details), echo=False)

    log(f"device {device}, triton {getattr(triton, '__version__', None)}, interpreter {interp}, out {out}")
    kernels_here = device.type == "cuda" or (triton is not None and interp)
    if not kernels_here:
        log("kernels: skipped (no CUDA; with Triton installed, TRITON_INTERPRET=1 runs them in the interpreter)")

    def matrices(shape: str, proj: dict) -> None:
        if args.skip_matrices or not kernels_here:
            return
        try:
            matrix_phase(shape, proj, device, args.group_size, device.type == "cuda", args.rotate_mb, metrics, details)
        except Exception as e:  # noqa: BLE001 - the engine phase still runs
            details[f"matrices_{shape}_error"] = f"{type(e).__name__}: {e}"[:300]
            log(f"matrices {shape}: FAILED {type(e).__name__}: {e}")
        gc.collect()
        torch.cuda.empty_cache() if device.type == "cuda" else None
        save()

    # the engine (the target); the 1B shape's matrices after int4_old (before the less important methods);
    # the 8B shape's at the end; each while the time budget lasts
    shapes = [("tiny", TINY_PROJ)] if args.dry_run else [(args.shape, projections(args.shape))]
    if args.shape_8b and not args.dry_run:
        shapes.append((args.shape_8b, projections(args.shape_8b)))

    def matrices_if_time(shape: str, proj: dict) -> None:
        if elapsed() < args.budget_s or args.dry_run:
            matrices(shape, proj)
        else:
            details.setdefault("skipped", []).append(f"matrices {shape}")
            log(f"matrices {shape}: skipped (time budget {args.budget_s} s spent)")

    first = lambda: matrices_if_time(*shapes[0])  # noqa: E731
    if args.skip_engine:
        first()
    else:
        if args.dry_run:  # the engine code path on CPU (no graphs, no GEMV step): decode + re-scoring
            args.new_tokens, args.repeats, args.prompt_len, args.check_tokens = 8, 1, 16, min(args.check_tokens, 8)
        try:
            engine_phase(args, device.type, metrics, details, save, after={"int4_old": first})
        except Exception as e:  # noqa: BLE001 - keep what was measured
            details["engine_error"] = f"{type(e).__name__}: {e}"[:300]
            log(f"engine phase: FAILED {type(e).__name__}: {e}")
            if not any(k.startswith(f"{shapes[0][0].replace('llama-', '').replace('.', '')}_") for k in metrics):
                first()
    for shape, proj in shapes[1:]:
        matrices_if_time(shape, proj)
    save()
    import json

    print(json.dumps(dict(sorted(metrics.items())), indent=1))
    log(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
