"""The server's delivery path at GPU speed, on a CPU: the engine loop in a child process vs in a thread.

On the H100 (bench/results/serve_load-h100-round2.json) the engine process decoded 32 streams at ~1.6 ms a step,
and the HTTP process, handed ~20k token events a second, fell behind: the TTFT's "deliver" phase (engine made the
first token -> the handler has it) took ~100 ms. This reproduces that without a GPU: `FastEngine` has the real
engine's interface and emits one token per running sequence every `--step-ms`, spending `--host-ms` of it in Python
(the real engine's host side, which holds the GIL: it is what slows the HTTP process down in the thread placement) and
sleeping the rest (the GPU's part). Each mode gets its own `lmsmith`-style server process (uvicorn, the real handlers
and SSE streaming); the load generator (`lmsmith bench serve`, aiohttp) streams `--concurrency` requests of
`--prompt-len` token ids and `--output-len` tokens; the server's /metrics give the TTFT phases.

    python -m bench.serve.serve_ipc_cpu --out bench/results/serve_ipc-cpu.json    # ~1 min on 2 cores
    python -m bench.serve.serve_ipc_cpu --baseline-src OLD/src --rounds 3 ...     # before/after, medians of 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench._result import make_result, write_result
from bench.common import ROOT
from bench.serve.analyze_step_log import mark_window

MODES = ("engine_process", "thread")


class FastEngine:
    """The `Engine` interface without a model. Each step: the running sequences decode one token each; waiting
    prompts are admitted under the token budget (`max_num_batched_tokens`, a prompt longer than what is left is
    chunked and finishes in a later step, as the real scheduler does) and give their first token at the end of the
    step that computes their last chunk. A decode-only step takes `step_ms` (`host_ms` of it Python holding the
    GIL, the rest asleep: the GPU's part); a step with prompt tokens takes `prefill_ms` (`prefill_host_ms` of it
    Python): on the H100 an eager prefill/mixed step costs ~6-10 ms whatever its size up to the budget, mostly host."""

    native = False

    def __init__(self, model_ref: str, step_ms: float = 1.5, host_ms: float = 0.5, max_num_seqs: int = 64,
                 max_model_len: int = 4096, prefill_ms: float | None = None, prefill_host_ms: float | None = None,
                 max_num_batched_tokens: int = 2048, **_: Any):
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(str(model_ref))
        self.model_ref, self.device = str(model_ref), "cpu"
        self.max_model_len, self.vocab_size = max_model_len, len(self.tokenizer)
        self.max_num_seqs = max_num_seqs
        self.eos_token_ids = [self.tokenizer.eos_token_id]
        self.step_s, self.host_s = step_ms / 1000, host_ms / 1000
        self.prefill_s = (prefill_ms if prefill_ms is not None else step_ms) / 1000
        self.prefill_host_s = (prefill_host_ms if prefill_host_ms is not None else host_ms) / 1000
        self.budget = max_num_batched_tokens
        self.token = 100
        self.piece = self.tokenizer.decode([self.token])
        self.waiting: list = []
        self.running: list = []
        self.scheduler = SimpleNamespace(max_num_seqs=max_num_seqs, max_num_batched_tokens=max_num_batched_tokens,
                                         waiting=self.waiting, running=self.running)  # (changed in place only)
        self.generated = 0
        self.trace_steps = False
        self.step_info: tuple | None = None

    def add_request(self, request_id: str, prompt: Any, params: Any) -> None:
        from lmsmith.serve.sequence import RequestMetrics

        params.validate()
        ids = list(prompt) if not isinstance(prompt, str) else self.tokenizer(prompt)["input_ids"]
        self.waiting.append(SimpleNamespace(rid=request_id, prompt=ids, todo=len(ids), num_tokens=len(ids), out=[],
                                            max_tokens=params.max_tokens or 16, text="",
                                            metrics=RequestMetrics(time.time())))

    def abort(self, request_id: str) -> None:
        for lst in (self.waiting, self.running):
            lst[:] = [s for s in lst if s.rid != request_id]

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def stats(self) -> dict:
        return dict(running=len(self.running), waiting=len(self.waiting), kv_blocks_total=64, kv_blocks_used=0,
                    kv_usage=0.0, preemptions=0, prompt_tokens=0, generation_tokens=self.generated)

    def step(self) -> list:
        from lmsmith.serve.engine import RequestOutput

        t0 = time.perf_counter()
        now = time.time()
        decoding = [s for s in self.running if not s.todo]
        budget = self.budget - len(decoding)
        chunks = []
        for s in self.running:  # unfinished prefills first, then admissions (FCFS)
            if s.todo and budget > 0:
                n = min(s.todo, budget)
                chunks.append((s, n))
                budget -= n
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            s = self.waiting.pop(0)
            s.metrics.first_scheduled_time = now
            self.running.append(s)
            n = min(s.todo, budget)
            chunks.append((s, n))
            budget -= n
        prefill = sum(n for _, n in chunks)
        if self.trace_steps:
            self.step_info = (prefill, len(chunks), len(decoding), 0)
        step_s, host_s = (self.prefill_s, self.prefill_host_s) if prefill else (self.step_s, self.host_s)
        while time.perf_counter() - t0 < host_s:  # the engine's Python side: holds the GIL
            pass
        rest = step_s - (time.perf_counter() - t0)
        if rest > 0:
            time.sleep(rest)  # the GPU's part: the GIL is free
        for s, n in chunks:
            s.todo -= n
        now = time.time()
        outs = []
        for s in list(self.running):
            if s.todo:
                continue  # mid-prefill
            s.out.append(self.token)
            s.text += self.piece
            if s.metrics.first_token_time is None:
                s.metrics.first_token_time = now
            done = len(s.out) >= s.max_tokens
            if done:
                s.metrics.finish_time = now
                self.running.remove(s)
            outs.append(RequestOutput(s.rid, 0, [self.token], self.piece, list(s.out), s.text, done,
                                      "length" if done else None, None, None, s.prompt, 0, s.metrics))
        self.generated += len(outs)
        return outs

    def close(self) -> None:
        pass


def serve_main(args: argparse.Namespace) -> None:
    """The server process of one mode."""
    from lmsmith.serve.server import create_app, make_uvicorn_server

    kw = dict(step_ms=args.step_ms, host_ms=args.host_ms, max_num_seqs=args.max_num_seqs, prefill_ms=args.prefill_ms,
              prefill_host_ms=args.prefill_host_ms, max_num_batched_tokens=args.max_num_batched_tokens)
    if args.serve == "engine_process":
        from lmsmith.serve.engine_process import EngineClient

        engine = EngineClient(args.model, engine_factory="bench.serve.serve_ipc_cpu:FastEngine", **kw)
    else:
        engine = FastEngine(args.model, **kw)
    app = create_app(engine, "bench", max_num_seqs=args.max_num_seqs)
    make_uvicorn_server(app, "127.0.0.1", args.port, log_level="warning").run()


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of a process so far (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_mode(mode: str, args: argparse.Namespace, model_dir: Path, src: Path, tag: str = "", rnd: int = 1,
             extra_env: dict | None = None) -> dict:
    from bench.serve.serve_load_gpu import PHASES, server_counters, wait_ready
    from lmsmith.serve.bench import bench_serve
    from lmsmith.serve.server import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    env |= extra_env or {}
    cmd = [sys.executable, "-m", "bench.serve.serve_ipc_cpu", "--serve", mode, "--port", str(port), "--model",
           str(model_dir), "--step-ms", str(args.step_ms), "--host-ms", str(args.host_ms), "--max-num-seqs",
           str(args.max_num_seqs), "--max-num-batched-tokens", str(args.max_num_batched_tokens)]
    cmd += ["--prefill-ms", str(args.prefill_ms)] if args.prefill_ms is not None else []
    cmd += ["--prefill-host-ms", str(args.prefill_host_ms)] if args.prefill_host_ms is not None else []
    if args.step_log:  # one log per server: MODE[TAG]-rROUND.jsonl
        env["LMSMITH_STEP_LOG"] = str(Path(args.step_log) / f"{mode}{tag}-r{rnd}.jsonl")
    proc = subprocess.Popen(cmd, env=env, cwd=ROOT)
    m: dict[str, float] = {}
    try:
        wait_ready(url, proc, timeout=120)
        common = dict(model="bench", token_ids=True, token_id_max=500, progress=False, prompt_len=args.prompt_len)
        bench_serve(url, requests=args.concurrency, concurrency=args.concurrency, output_len=8, **common)  # warm-up
        before = server_counters(url)
        cpu0 = cpu_seconds(proc.pid)
        t_run = time.time()
        s = bench_serve(url, requests=args.requests, concurrency=args.concurrency, output_len=args.output_len,
                        seed=args.seed, **common)
        cpu1 = cpu_seconds(proc.pid)
        if args.step_log:
            mark_window(env["LMSMITH_STEP_LOG"], "run", t_run, time.time())
        time.sleep(0.3)
        after = server_counters(url)
        d = {k: after[k] - before[k] for k in after}
        if s["errors"]:
            raise SystemExit(f"{mode}: {s['errors']} requests failed: {s.get('error_examples')}")
        for k in ("ttft_p50_ms", "ttft_p99_ms", "tpot_p50_ms", "tpot_p99_ms", "output_tok_per_s", "errors"):
            m[k] = s[k]
        if d["steps"]:
            m["engine_step_ms"] = 1000 * d["step_s"] / d["steps"]
        if cpu0 is not None and cpu1 is not None and s.get("output_tokens"):
            # the server process's CPU per streamed token: in engine_process mode the HTTP process alone
            m["server_cpu_us_per_token"] = 1e6 * (cpu1 - cpu0) / s["output_tokens"]
        for ph in PHASES:
            if d[f"{ph}_count"]:
                m[f"ttft_{ph}_mean_ms"] = 1000 * d[f"{ph}_sum"] / d[f"{ph}_count"]
        print(f"[{mode}] TTFT p50 {s['ttft_p50_ms']:.1f} p99 {s['ttft_p99_ms']:.1f} ms, TPOT p50 {s['tpot_p50_ms']:.2f} "
              f"ms, {s['output_tok_per_s']:.0f} tok/s, step {m.get('engine_step_ms', float('nan')):.2f} ms, server CPU "
              f"{m.get('server_cpu_us_per_token', float('nan')):.1f} us/token, errors "
              f"{s['errors']}; TTFT phases (mean ms): "
              + ", ".join(f"{ph} {m.get(f'ttft_{ph}_mean_ms', float('nan')):.1f}" for ph in PHASES), flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--requests", type=int, default=96)
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--step-ms", type=float, default=1.5, help="engine step time (the H100's c32 decode step: ~1.6)")
    ap.add_argument("--host-ms", type=float, default=0.5, help="of which Python on the host, holding the GIL")
    ap.add_argument("--prefill-ms", type=float, help="time of a step with prompt tokens (default: --step-ms; the "
                    "H100's eager prefill/mixed step: ~9)")
    ap.add_argument("--prefill-host-ms", type=float, help="of which Python holding the GIL (default: --host-ms)")
    ap.add_argument("--max-num-batched-tokens", type=int, default=2048, help="token budget of a step")
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--step-log", help="directory for each server's engine-loop step log (LMSMITH_STEP_LOG; "
                    "bench/serve/analyze_step_log.py reads them)")
    ap.add_argument("--rounds", type=int, default=1, help="run every server this many times (order flipped each "
                    "round) and report the medians")
    ap.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    ap.add_argument("--baseline-src", help="also measure both modes on these lmsmith sources (e.g. a checkout of an "
                    "earlier commit; its EngineClient needs the engine_factory argument): fields end in _baseline")
    ap.add_argument("--variant", action="append", help="NAME:KEY=VALUE: also measure every mode with this environment "
                    "variable set (fields end in _NAME), e.g. nogather:LMSMITH_BURST_WAIT_MS=0; repeatable")
    ap.add_argument("--out", help="result JSON (default: print only)")
    ap.add_argument("--serve", choices=MODES, help=argparse.SUPPRESS)  # internal: be the server of one mode
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve:
        serve_main(args)
        return 0
    from lmsmith.tiny import build_tiny

    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = build_tiny(Path(tmp) / "tiny", "llama")  # only its tokenizer is used
        sources = [("", ROOT / "src", {})] + ([("_baseline", Path(args.baseline_src), {})] if args.baseline_src else [])
        for v in args.variant or []:  # NAME:KEY=VALUE -> this tree with one environment variable set
            name, _, kv = v.partition(":")
            key, _, value = kv.partition("=")
            if not name or not key:
                raise SystemExit(f"--variant {v!r}: expected NAME:KEY=VALUE")
            sources.append((f"_{name}", ROOT / "src", {key: value}))
        servers = [(mode, tag, src, extra) for tag, src, extra in sources for mode in args.modes]
        runs: dict[str, list[dict]] = {}
        for r in range(args.rounds):  # one server at a time, same machine, same load; the order flips every round
            for mode, tag, src, extra in (servers if r % 2 == 0 else servers[::-1]):
                print(f"round {r + 1} {mode}{tag}: ", end="", flush=True)
                runs.setdefault(f"{mode}{tag}", []).append(run_mode(mode, args, model_dir, src, tag, r + 1, extra))
        for name, got in runs.items():  # the median over rounds (a shared machine's timings swing)
            for k in got[0]:
                metrics[f"{k}_{name}"] = float(statistics.median(g[k] for g in got if k in g))
    result = make_result("serve_ipc", {k: round(v, 3) if isinstance(v, float) else v for k, v in metrics.items()},
                         device="cpu", workload={
                             "engine": f"FastEngine: {args.step_ms} ms a decode step ({args.host_ms} ms of it Python), "
                                       f"{args.prefill_ms or args.step_ms} ms a step with prompt tokens "
                                       f"({args.prefill_host_ms or args.host_ms} ms Python), "
                                       f"{args.max_num_batched_tokens} tokens a step",
                             "concurrency": args.concurrency, "requests": args.requests, "prompt_len": args.prompt_len,
                             "output_len": args.output_len, "modes": list(args.modes), "rounds": args.rounds,
                             "baseline_src": args.baseline_src, "variants": args.variant})
    if args.out:
        write_result(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
