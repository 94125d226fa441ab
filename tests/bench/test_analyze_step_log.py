"""bench/serve/analyze_step_log.py reads an engine-loop step log into bursts and engine-side TTFTs; serve_ipc_cpu's
FastEngine splits a burst under the token budget as the real scheduler does."""

from __future__ import annotations

import io
import json
from pathlib import Path

from bench.serve.analyze_step_log import analyze, mark_window


def rec(t: float, step_ms: float, **kw) -> dict:
    return {"t": t, "idle_ms": 0.0, "apply_ms": 0.0, "step_ms": step_ms, "w": 0, "r": 0, "out": 0, "first": 0,
            "fin": 0, "send_ms": 0.0, "pid": 1, "loop": "process"} | kw


def test_bursts_and_engine_side_ttft(tmp_path: Path):
    t0 = 1000.0
    recs = [{"t": t0 - 1, "event": "start"},
            # burst 1: a submitted at t0, b at t0+0.002; a alone in a 9 ms prefill step, b behind it
            rec(t0 + 0.001, 9.0, adds=1, lag_ms=[1.0], add_ids=["a"], pf_tok=128, pf_seqs=1, dec=0, ovl=0,
                first=1, first_ids=["a"]),
            rec(t0 + 0.010, 9.0, adds=1, lag_ms=[8.0], add_ids=["b"], pf_tok=128, pf_seqs=1, dec=1, ovl=0,
                first=1, first_ids=["b"]),
            rec(t0 + 0.019, 2.0, pf_tok=0, pf_seqs=0, dec=2, ovl=1),
            # burst 2, a second later: c and d in one step
            rec(t0 + 1.0, 10.0, adds=2, lag_ms=[0.5, 0.2], add_ids=["c", "d"], pf_tok=256, pf_seqs=2, dec=0, ovl=0,
                first=2, first_ids=["c", "d"])]
    log = tmp_path / "steps.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = io.StringIO()
    res = analyze(log, None, 20.0, 2, out=out)
    assert res["iterations"] == 4
    assert res["steps"]["prefill"]["n"] == 2 and res["steps"]["mixed"]["n"] == 1 and res["steps"]["decode-ovl"]["n"] == 1
    assert [b["requests"] for b in res["bursts"]] == [2, 2]
    # a: submitted t0, first token at the end of its step (t0 + 1 ms + 9 ms) -> 10 ms; b: t0+2 ms -> t0+19 ms
    b1 = res["bursts"][0]
    assert abs(b1["ttft_max_ms"] - 17.0) < 1e-6 and abs(b1["arrival_span_ms"] - 2.0) < 1e-6
    assert b1["prefill_or_mixed_steps"] == 2
    assert abs(res["pickup_ms"]["max"] - 8.0) < 1e-6
    # each request was applied as its step began: nothing behind; own steps of 9, 9, 10 and 10 ms
    assert res["behind_steps_ms"]["max"] < 1e-6 and abs(res["own_step_ms"]["max"] - 10.0) < 1e-6
    assert abs(res["own_step_ms"]["p50"] - 9.0) < 1e-6 or abs(res["own_step_ms"]["p50"] - 10.0) < 1e-6
    assert "burst 0" in out.getvalue() and "mixed 128 tok / 1 seqs + 1 dec" in out.getvalue()
    # a window keeps only its iterations
    mark_window(log, "second", t0 + 0.5, t0 + 2)
    res2 = analyze(log, "second", 20.0, 1, out=io.StringIO())
    assert res2["iterations"] == 1 and [b["requests"] for b in res2["bursts"]] == [2]


def test_fast_engine_splits_a_burst_under_the_budget(tmp_path: Path):
    from bench.serve.serve_ipc_cpu import FastEngine

    from lmsmith.serve import SamplingParams
    from lmsmith.tiny import build_tiny

    eng = FastEngine(str(build_tiny(tmp_path / "tiny", "llama")), step_ms=0.1, host_ms=0.0, prefill_ms=0.2,
                     prefill_host_ms=0.0, max_num_batched_tokens=2048)
    eng.trace_steps = True
    for i in range(32):
        eng.add_request(f"r{i}", list(range(128)), SamplingParams(max_tokens=4, ignore_eos=True))
    firsts, infos = [], []
    while len(firsts) < 32:
        outs = eng.step()
        infos.append(eng.step_info)
        firsts += [o.request_id for o in outs if len(o.token_ids) == 1]
    # as the engine on the H100 (gpu_runs burst profile): 16 prompts, then 15 and a chunk beside 16 decodes, then the
    # chunk's 16 tokens beside 31 decodes
    assert infos == [(2048, 16, 0, 0), (2032, 16, 16, 0), (16, 1, 31, 0)]
    assert sorted(firsts) == sorted(f"r{i}" for i in range(32))


def test_serve_load_prints_a_brief_report(tmp_path: Path):
    from bench.serve.serve_load_gpu import brief

    recs = [rec(1000.0 + i * 0.01, 1.0 + i, adds=1, lag_ms=[0.5], add_ids=[f"r{i}"], pf_tok=8, pf_seqs=1, dec=i,
                ovl=0, first=1, first_ids=[f"r{i}"]) for i in range(6)]
    log = tmp_path / "steps.jsonl"
    log.write_text("".join(json.dumps(r) + "\n" for r in recs))
    out = io.StringIO()
    analyze(log, None, 20.0, 1, out=out)
    full, short = out.getvalue(), brief(out.getvalue(), slowest=2)
    assert "-- burst" in full and "-- burst" not in short and "engine-side TTFT" in short
    lines = short.splitlines()
    i = next(k for k, line in enumerate(lines) if line.startswith("slowest loop iterations"))
    shown = [line for line in lines[i + 1:i + 4] if line.startswith("  ") and " ms  " in line[:16]]
    assert len(shown) == 2 and "6.00 ms" in shown[0] and "5.00 ms" in shown[1]
