"""The server under load on a GPU: `lmsmith serve` (its own process) driven by `lmsmith bench serve`.

Random-init weights of a real shape (default Llama-3.2-1B, bf16; nothing is downloaded), prompts sent as
token-id arrays on /v1/completions with fixed output lengths (`ignore_eos`). Workloads:
  c32:   `--requests` x (128 in, 256 out) at 32 concurrent streams -> ttft_p50_ms_c32, tpot_p50/p99_ms_c32
  mix:   a seeded ShareGPT-like length mix (log-normal, medians 128 in / 128 out) at 32 streams
  c1:    a few single-stream requests (the latency floor through HTTP)
Engine step time (from the server's /metrics) is reported next to TPOT: the difference is server overhead.
Each server variant (`--modes`: the engine loop in its own process, `--engine-process`; in a thread of the HTTP
process, `--no-engine-process`; in its own process with prefill steps run eagerly, LMSMITH_PREFILL_GRAPHS=0) gets
its own server in the same run, one after the other: fields end in `_engine_process`, `_thread` and
`_engine_process_eager` (e.g. ttft_p50_ms_c32_engine_process); the first mode also fills the unsuffixed fields.

    python -m bench.serve.serve_load_gpu --out bench/results/serve_load-h100.json         # ~4 min on an H100
    python -m bench.serve.serve_load_gpu --model PATH --device cpu --requests 8 ...       # smoke test, any model dir
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench._result import make_result, write_result
from bench.common import ROOT
from bench.serve.analyze_step_log import analyze, mark_window


def wait_ready(url: str, proc: subprocess.Popen, timeout: float) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with status {proc.returncode} before it was ready")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"the server was not ready within {timeout:.0f} s")


PHASES = ("admit", "queue", "prefill", "deliver")


def server_counters(url: str) -> dict[str, float]:
    """Engine steps, seconds inside steps and the TTFT phase sums/counts from the server's Prometheus text."""
    with urllib.request.urlopen(url + "/metrics", timeout=10) as r:
        text = r.read().decode()

    def value(pattern: str) -> float:
        m = re.search(rf"^{pattern} (\S+)$", text, re.M)
        return float(m.group(1)) if m else 0.0

    vals = {"steps": value("lmsmith_engine_steps_total"), "step_s": value("lmsmith_engine_step_seconds_total"),
            "graph_steps": value("lmsmith_engine_prefill_graph_steps_total"),
            "ttft_sum": value("lmsmith_time_to_first_token_seconds_sum"),
            "ttft_count": value("lmsmith_time_to_first_token_seconds_count")}
    for ph in PHASES:
        vals[f"{ph}_sum"] = value(rf'lmsmith_ttft_phase_seconds_sum\{{phase="{ph}"\}}')
        vals[f"{ph}_count"] = value(rf'lmsmith_ttft_phase_seconds_count\{{phase="{ph}"\}}')
    return vals


def run_mode(mode: str, args: argparse.Namespace, model_dir: Path, vocab: int, device: str,
             base: str | None = None, extra_env: dict | None = None) -> tuple[dict, dict, list]:
    """Start `lmsmith serve` with the engine loop in its own process (`engine_process`) or in a thread of the
    HTTP process (`thread`), warm it up, run the workloads; returns (metrics, workload configs, server command)."""
    from lmsmith.serve.bench import bench_serve
    from lmsmith.serve.server import free_port

    label, mode = mode, base or mode  # a variant (`--variant NAME:MODE:...`) runs as MODE under its own name
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    flag = "--no-engine-process" if mode == "thread" else "--engine-process"
    cmd = [sys.executable, "-m", "lmsmith.cli", "serve", str(model_dir), "--port", str(port), "--dtype", args.dtype,
           "--device", device, "--max-num-seqs", str(args.max_num_seqs), "--served-model-name", "bench",
           "--max-num-batched-tokens", str(args.max_num_batched_tokens), "--log-level", "warning", flag]
    if args.server_log:
        Path(args.server_log).parent.mkdir(parents=True, exist_ok=True)
    log = open(f"{args.server_log}.{label}", "w") if args.server_log else subprocess.DEVNULL
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]))
    # the piecewise prefill graphs (the default on CUDA): on for the engine_process server, off for the others
    env["LMSMITH_PREFILL_GRAPHS"] = "1" if mode == "engine_process" else "0"
    if args.fresh_triton_cache:  # this server compiles its Triton kernels itself, as a fresh deployment would
        env["TRITON_CACHE_DIR"] = tempfile.mkdtemp(prefix=f"triton-{label}-")
    env |= extra_env or {}
    step_log = str(Path(args.step_log) / f"steps-{label}.jsonl") if args.step_log else None
    if step_log:  # the engine loop's per-iteration trace (serve.step_log), windows marked per workload below
        env["LMSMITH_STEP_LOG"] = step_log
    t = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
    metrics: dict[str, float] = {}
    workloads: dict[str, dict] = {}
    try:
        try:
            wait_ready(url, proc, timeout=300)
        except SystemExit as e:  # e.g. another stage's CLI import failing on this machine: serve() directly
            print(f"{e}; retrying with lmsmith.serve.server.serve() directly", flush=True)
            opts = cmd[cmd.index("--port"):-1]
            kw = dict(zip([o.lstrip("-").replace("-", "_") for o in opts[::2]], opts[1::2]))
            kw = {k: int(v) if v.isdigit() else v for k, v in kw.items()} | {"engine_process": mode != "thread"}
            code = f"from lmsmith.serve.server import serve; serve({str(model_dir)!r}, **{kw!r})"
            proc = subprocess.Popen([sys.executable, "-c", code], stdout=log, stderr=subprocess.STDOUT, env=env)
            cmd = [sys.executable, "-c", code]
            wait_ready(url, proc, timeout=300)
        metrics["server_start_s"] = time.perf_counter() - t
        with urllib.request.urlopen(url + "/metrics", timeout=10) as r:  # 0: no prefill graphs (eager, or CPU)
            text = r.read().decode()
        m = re.search(r"^lmsmith_engine_prefill_graph_buckets (\S+)$", text, re.M)
        metrics["prefill_graph_buckets"] = float(m.group(1)) if m else 0.0
        m = re.search(r"^lmsmith_engine_prefill_graph_bytes (\S+)$", text, re.M)
        metrics["prefill_graph_mib"] = float(m.group(1)) / 2**20 if m else 0.0
        common = dict(model="bench", token_ids=True, token_id_max=vocab, progress=False, seed=args.seed)
        # warm-up: kernels, CUDA graphs of every batch bucket, prefill shapes, on other prompts
        t = time.perf_counter()
        bench_serve(url, requests=4, concurrency=1, prompt_len=args.prompt_len, output_len=8, **common | {"seed": 99})
        bench_serve(url, requests=2 * args.concurrency, concurrency=args.concurrency, prompt_len=args.prompt_len,
                    output_len=16, **common | {"seed": 98})
        bench_serve(url, requests=args.concurrency, concurrency=args.concurrency, prompt_len=args.prompt_len,
                    output_len=args.mix_output_len, dataset="sharegpt-mix", **common | {"seed": 97})
        metrics["warmup_s"] = time.perf_counter() - t
        c = args.concurrency
        runs = [(f"c{c}" if k == 0 else f"c{c}_pass{k + 1}", dict(requests=args.requests, concurrency=c,
                                                                  prompt_len=args.prompt_len, output_len=args.output_len))
                for k in range(args.passes)]  # later passes: the same load again, after the first met every shape
        if args.client_workers > 1:  # the same load from several client processes (other prompts: no prefix hits)
            runs.append((f"c{c}_w{args.client_workers}", dict(runs[0][1], workers=min(args.client_workers, c),
                                                             seed=args.seed + 1)))
        if "mix" not in args.skip:
            runs.append((f"mix_c{c}", dict(requests=args.requests, concurrency=c, prompt_len=args.prompt_len,
                                           output_len=args.mix_output_len, dataset="sharegpt-mix")))
        if "c1" not in args.skip:
            runs.append(("c1", dict(requests=4, concurrency=1, prompt_len=args.prompt_len, output_len=args.output_len)))
        for name, kw in runs:
            before = server_counters(url)
            t_run = time.time()
            s = bench_serve(url, **(common | kw))
            if step_log:
                mark_window(step_log, name, t_run, time.time())
            time.sleep(0.2)  # the engine process sends its step counters when it goes idle
            after = server_counters(url)
            d = {k: after[k] - before[k] for k in after}
            workloads[name] = s["config"] | {"duration_s": round(s["duration_s"], 2)}
            for k in ("ttft_p50_ms", "ttft_p90_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "itl_p50_ms",
                      "itl_p99_ms", "e2e_p50_ms", "output_tok_per_s", "request_throughput", "errors"):
                base, _, _ = k.rpartition("_ms")
                key = f"{base}_ms_{name}" if k.endswith("_ms") else f"{k}_{name}"
                metrics[key] = s[k]
            metrics[f"prefill_graph_steps_{name}"] = d["graph_steps"]  # steps replayed as piecewise CUDA graphs
            if d["steps"] > 0:
                metrics[f"engine_step_ms_{name}"] = 1000 * d["step_s"] / d["steps"]
                metrics[f"engine_busy_frac_{name}"] = d["step_s"] / s["duration_s"]
            if d["ttft_count"] > 0:  # handler start -> first token out; the client's TTFT adds HTTP and parsing
                metrics[f"ttft_server_mean_ms_{name}"] = 1000 * d["ttft_sum"] / d["ttft_count"]
                metrics[f"ttft_client_mean_ms_{name}"] = s["ttft_mean_ms"]
            for ph in PHASES:  # mean TTFT split, server side
                if d[f"{ph}_count"] > 0:
                    metrics[f"ttft_{ph}_mean_ms_{name}"] = 1000 * d[f"{ph}_sum"] / d[f"{ph}_count"]
            print(f"[{label}] {name}: TTFT p50 {s['ttft_p50_ms']:.1f} ms p99 {s['ttft_p99_ms']:.1f} ms, TPOT p50 "
                  f"{s['tpot_p50_ms']:.2f} ms p99 {s['tpot_p99_ms']:.2f} ms, {s['output_tok_per_s']:.0f} output tok/s, "
                  f"engine step {metrics.get(f'engine_step_ms_{name}', float('nan')):.2f} ms, errors {s['errors']}; TTFT "
                  + ", ".join(f"{ph} {metrics.get(f'ttft_{ph}_mean_ms_{name}', float('nan')):.1f}" for ph in PHASES)
                  + f"; server-side TTFT {metrics.get(f'ttft_server_mean_ms_{name}', float('nan')):.1f}"
                  + " ms (mean)", flush=True)
            for e in s.get("error_examples", []):
                print("  error:", e, flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return metrics, workloads, cmd


def brief(report: str, slowest: int = 3) -> str:
    """The summary lines of an analyze_step_log report: the `slowest` slowest iterations, no burst timelines."""
    keep, in_slowest, shown = [], False, 0
    for line in report.splitlines():
        if line.startswith("-- burst"):
            break
        if line.startswith("slowest loop iterations"):
            in_slowest, shown = True, 0
        elif in_slowest and line.startswith("  ") and " ms  " in line[:16]:
            shown += 1
            if shown > slowest:
                continue
        else:
            in_slowest = False
        keep.append(line)
    return "\n".join(keep)


def report_step_logs(log_dir: Path, modes: list[str], workloads: list[str]) -> None:
    """Analyse each server's step log per workload window: the c32 window printed, all written to files."""
    import io

    summary = {}
    for mode in modes:
        log = log_dir / f"steps-{mode}.jsonl"
        if not log.exists():
            print(f"no step log at {log}", flush=True)
            continue
        for wl in workloads:
            if not wl.endswith(f"_{mode}"):
                continue
            name = wl[:-len(mode) - 1]
            buf = io.StringIO()
            try:
                summary[f"{mode}/{name}"] = analyze(log, name, 20.0, 3, out=buf)
            except SystemExit as e:
                buf.write(f"{e}\n")
            (log_dir / f"analysis-{mode}-{name}.txt").write_text(buf.getvalue())
            if name.startswith("c") and not name.startswith("c1") and "_pass" not in name:  # timelines: in the file
                print(brief(buf.getvalue()), flush=True)
    (log_dir / "analysis.json").write_text(json.dumps(summary, indent=1))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", help="random-init shape (lmsmith.ops.planner.SHAPES)")
    ap.add_argument("--model", help="serve this model dir instead of a random-init shape")
    ap.add_argument("--device", default=None, help="cuda (default when available) or cpu")
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--client-workers", type=int, default=1,
                    help="also run the c32 load from this many client processes (workload cN_wW): a single client "
                         "parsing ~18k chunks a second delays its own TTFT timestamps")
    ap.add_argument("--requests", type=int, default=128, help="requests per workload at --concurrency")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--passes", type=int, default=1, help="run the c<concurrency> workload this many times per "
                    "server (fields of later passes: c32_pass2, ...): a one-time cost shows as a first pass slower "
                    "than the next")
    ap.add_argument("--mix-output-len", type=int, default=128, help="median output length of the ShareGPT-like mix")
    ap.add_argument("--seed", type=int, default=0, help="seed of the prompts and of the length mix")
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048)
    ap.add_argument("--skip", nargs="*", default=[], choices=["c1", "mix"], help="workloads to leave out")
    ap.add_argument("--modes", nargs="+", default=["engine_process", "thread", "engine_process_eager"],
                    choices=["engine_process", "thread", "engine_process_eager"],
                    help="servers to measure side by side: the engine loop in its own process, in a thread of the HTTP "
                         "process, and in its own process without prefill graphs (LMSMITH_PREFILL_GRAPHS=0); the "
                         "first also fills the unsuffixed fields")
    ap.add_argument("--fresh-triton-cache", action="store_true",
                    help="give every server an empty TRITON_CACHE_DIR: each compiles its kernels itself (otherwise the "
                         "first server of a fresh machine pays the compiles and the later ones load them)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:MODE:KEY=VALUE[,KEY=VALUE]",
                    help="one more server after the modes: MODE with these environment variables, fields suffixed "
                         "_NAME (e.g. thread_nofreeze:thread:LMSMITH_GC_FREEZE=0); repeatable")
    ap.add_argument("--server-log", help="file prefix for the servers' output (PREFIX.MODE; default: discarded)")
    ap.add_argument("--step-log", help="directory: each server's engine loop writes a per-iteration trace there "
                    "(steps-MODE.jsonl, LMSMITH_STEP_LOG), analysed at the end (bench/serve/analyze_step_log.py; "
                    "the c32 window's summary printed, every workload's in DIR/analysis-MODE-WORKLOAD.txt)")
    ap.add_argument("--out", help="result JSON (default: print only)")
    args = ap.parse_args()

    import torch

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    tmp = tempfile.TemporaryDirectory()
    if args.model:
        model_dir, vocab = Path(args.model), json.loads((Path(args.model) / "config.json").read_text())["vocab_size"]
    else:
        from bench.common import build_model_dir
        from lmsmith.ops.planner import SHAPES
        if device != "cuda":
            raise SystemExit("a random-init shape needs CUDA; pass --model DIR for a CPU smoke test")
        t = time.perf_counter()
        model_dir = build_model_dir(args.shape, Path(tmp.name) / "model", torch.bfloat16)
        vocab = SHAPES[args.shape]["vocab_size"]
        print(f"built {args.shape} in {time.perf_counter() - t:.1f} s", flush=True)

    metrics: dict[str, float] = {}
    workloads: dict[str, dict] = {}
    commands: dict[str, str] = {}
    servers: list[tuple[str, str | None, dict]] = [(m, None, {}) for m in args.modes]
    for v in args.variant:
        name, base, kvs = (v.split(":", 2) + ["", ""])[:3]
        env = dict(kv.split("=", 1) for kv in kvs.split(",") if "=" in kv)
        if not name or base not in ("engine_process", "thread", "engine_process_eager") or not env or name in args.modes:
            raise SystemExit(f"--variant {v!r}: expected NAME:MODE:KEY=VALUE[,KEY=VALUE] with MODE one of "
                             "engine_process, thread, engine_process_eager and a new NAME")
        servers.append((name, base, env))
    try:
        for mode, base, extra in servers:  # side by side on the same machine, one server at a time
            got, runs, cmd = run_mode(mode, args, model_dir, vocab, device, base, extra)
            commands[mode] = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
            workloads |= {f"{k}_{mode}": v for k, v in runs.items()}
            metrics |= {f"{k}_{mode}": v for k, v in got.items()}
            if mode == args.modes[0]:  # the unsuffixed fields (what earlier results and the README quote)
                metrics |= got
    finally:
        tmp.cleanup()
    metrics["modes"] = len(servers)
    if args.step_log:
        report_step_logs(Path(args.step_log), [m for m, _, _ in servers], list(workloads))

    result = make_result(
        "serve_load", {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()},
        device=torch.device("cuda") if device == "cuda" else f"cpu ({platform.machine()})",
        workload={"model": args.model or f"random-init {args.shape}", "dtype": args.dtype,
                     "max_num_seqs": args.max_num_seqs, "max_num_batched_tokens": args.max_num_batched_tokens,
                     "prompts": "token-id arrays on /v1/completions, stream, ignore_eos", "runs": workloads,
                  "engine_modes": list(args.modes), "variants": args.variant, "unsuffixed_fields": args.modes[0],
                  "server_commands": commands},
    )
    if args.out:
        write_result(args.out, result)
    else:
        print(json.dumps(result["metrics"], indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
