"""LMSMITH_STEP_LOG: the engine loop's per-iteration trace, in both placements (a thread of the server, the engine
process), and what the engine reports about each step."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from lmsmith.serve import SamplingParams

PROMPTS = [[5, 6, 7, 8, 9], [10, 11, 12], [13, 14, 15, 16]]
KW = dict(max_num_seqs=4, block_size=4, max_num_batched_tokens=64, device="cpu")


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from lmsmith.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("steplog") / "tiny", "llama")


def read_log(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_engine_reports_each_step_only_when_traced(tiny_llama):
    from lmsmith.serve.engine import Engine

    eng = Engine(str(tiny_llama), **KW)
    sp = SamplingParams(max_tokens=3, temperature=0.0, ignore_eos=True)
    eng.add_request("a", PROMPTS[0], sp)
    eng.step()
    assert eng.step_info is None  # untraced: nothing computed
    eng.trace_steps = True
    eng.add_request("b", PROMPTS[1], sp)
    eng.add_request("c", PROMPTS[2], sp)
    eng.step()
    assert eng.step_info == (3 + 4, 2, 1, 0)  # b and c prefilled, a decoded, synchronously
    eng.step()
    assert eng.step_info == (0, 0, 3, 0)


def test_engine_reports_overlapped_decodes(tiny_llama):
    from lmsmith.serve.engine import Engine

    eng = Engine(str(tiny_llama), async_scheduling=True, **KW)
    if not eng.async_scheduling:
        pytest.skip("this runner cannot overlap decode steps")
    eng.trace_steps = True
    eng.add_request("a", PROMPTS[0], SamplingParams(max_tokens=4, temperature=0.0, ignore_eos=True))
    eng.step()
    assert eng.step_info == (5, 1, 0, 0)
    eng.step()
    assert eng.step_info == (0, 0, 1, 1)


def check_log(path: Path, loop: str, rids: list[str]) -> None:
    recs = read_log(path)
    assert recs[0]["event"] == "start" and recs[0]["loop"] == loop
    steps = [r for r in recs if "step_ms" in r]
    assert steps and all(r["loop"] == loop and r["step_ms"] >= 0 and "w" in r and "r" in r for r in steps)
    added = [rid for r in steps for rid in r.get("add_ids", [])]
    firsts = [rid for r in steps for rid in r.get("first_ids", [])]
    assert sorted(added) == sorted(rids) and sorted(firsts) == sorted(rids)  # each request once, in and out
    for r in steps:
        if "add_ids" in r:
            assert len(r["lag_ms"]) == r["adds"] == len(r["add_ids"]) and all(x >= 0 for x in r["lag_ms"])
    # every prompt token went through a prefill step, every generated token after the first through a decode row
    assert sum(r.get("pf_tok", 0) for r in steps) == sum(len(p) for p in PROMPTS)
    assert sum(r.get("first", 0) for r in steps) == len(PROMPTS)
    assert sum(r.get("fin", 0) for r in steps) == len(PROMPTS)
    assert sum(r.get("dec", 0) for r in steps) == len(PROMPTS) * (4 - 1)


def serve_and_log(engine) -> list[str]:
    from lmsmith.serve.server import BackgroundServer, create_app

    rids = []
    with BackgroundServer(create_app(engine, "tiny", max_num_seqs=4)) as srv:
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            for p in PROMPTS:
                r = c.post("/v1/completions", json={"model": "tiny", "prompt": p, "max_tokens": 4, "temperature": 0,
                                                     "ignore_eos": True})
                assert r.status_code == 200, r.text
                rids.append(r.json()["id"] + "-0")
    return rids


def test_thread_loop_writes_the_step_log(tiny_llama, tmp_path, monkeypatch):
    from lmsmith.serve.engine import Engine

    path = tmp_path / "logs" / "steps.jsonl"
    monkeypatch.setenv("LMSMITH_STEP_LOG", str(path))
    rids = serve_and_log(Engine(str(tiny_llama), **KW))
    check_log(path, "thread", rids)


def test_engine_process_writes_the_step_log(tiny_llama, tmp_path, monkeypatch):
    from lmsmith.serve.engine_process import EngineClient

    path = tmp_path / "steps.jsonl"
    monkeypatch.setenv("LMSMITH_STEP_LOG", str(path))  # the spawned child inherits it
    engine = EngineClient(str(tiny_llama), **KW)
    rids = serve_and_log(engine)
    assert not engine.proc.is_alive()
    check_log(path, "process", rids)
    acks = [r["ack_ms"] for r in read_log(path) if "ack_ms" in r]
    assert acks and all(a >= 0 for a in acks)
    assert read_log(path)[0]["gc_frozen"] > 1000  # the child froze its loaded heap before serving
    http = read_log(Path(f"{path}.http.jsonl"))  # the HTTP process's monitor: started, and only known events
    assert http[0]["event"] == "start" and http[0]["loop"] == "http"
    assert http[1]["event"] == "loop" and http[1]["impl"]
    assert all(e["event"] in ("lag", "gc") and e["ms"] > 0 for e in http[2:])


def test_no_log_without_the_variable(tiny_llama, tmp_path, monkeypatch):
    from lmsmith.serve.engine import Engine

    monkeypatch.delenv("LMSMITH_STEP_LOG", raising=False)
    eng = Engine(str(tiny_llama), **KW)
    serve_and_log(eng)
    assert not eng.trace_steps and eng.step_info is None


# ------------------------------------------------------------------ LMSMITH_ADMIT_DELAY_MS (scheduler)
def make_scheduler(monkeypatch, delay_ms: str | None, budget: int = 64):
    from lmsmith.serve.block_manager import BlockManager
    from lmsmith.serve.scheduler import Scheduler

    if delay_ms is None:
        monkeypatch.delenv("LMSMITH_ADMIT_DELAY_MS", raising=False)
    else:
        monkeypatch.setenv("LMSMITH_ADMIT_DELAY_MS", delay_ms)
    return Scheduler(BlockManager(64, 4), max_num_seqs=8, max_num_batched_tokens=budget)


def seq(rid: str, n: int = 8, age_s: float = 0.0):
    import time

    from lmsmith.serve.sequence import Sequence

    return Sequence(rid, 0, list(range(1, n + 1)), SamplingParams(max_tokens=4), time.time() - age_s)


def test_admit_delay_holds_new_prompts_while_others_decode(monkeypatch):
    sch = make_scheduler(monkeypatch, "60000")  # a minute: only the other conditions can admit
    a = seq("a")
    sch.add(a)
    assert [s.seq for s in sch.schedule()] == [a]  # nothing running: admitted at once
    a.num_computed = a.num_tokens
    a.tokens.append(1)  # a decodes from now on
    b = seq("b")
    sch.add(b)
    out = sch.schedule()
    assert [s.seq for s in out] == [a] and list(sch.waiting) == [b]  # b held; a keeps decoding
    a.num_computed += 1
    a.tokens.append(1)
    assert sch.schedule_decodes(lambda s: False) is not None  # the overlapped loop may go on meanwhile
    a.num_computed += 1
    a.tokens.append(1)
    c = seq("c", n=60)
    sch.add(c)  # b + c fill the token budget: no reason to wait longer
    out = sch.schedule()
    assert [s.seq for s in out] == [a, b, c]


def test_admit_delay_admits_once_the_oldest_waited_long_enough(monkeypatch):
    sch = make_scheduler(monkeypatch, "50")
    a = seq("a")
    sch.add(a)
    sch.schedule()
    a.num_computed = a.num_tokens
    a.tokens.append(1)
    sch.add(seq("b", age_s=0.2))  # arrived 200 ms ago
    sch.add(seq("c"))  # just now: admitted with it (one step for the trickle)
    assert [s.seq.request_id for s in sch.schedule()] == ["a", "b", "c"]


def test_no_delay_by_default(monkeypatch):
    sch = make_scheduler(monkeypatch, None)
    a = seq("a")
    sch.add(a)
    sch.schedule()
    a.num_computed = a.num_tokens
    a.tokens.append(1)
    sch.add(seq("b"))
    assert [s.seq.request_id for s in sch.schedule()] == ["a", "b"]
    assert sch.schedule_decodes(lambda s: False) is None or not sch.waiting


def test_admit_delay_keeps_greedy_outputs(tiny_llama, monkeypatch):
    """Requests that arrive while others decode produce the same tokens with the delay as without."""
    from lmsmith.serve.engine import Engine

    def run(delay: str) -> dict:
        monkeypatch.setenv("LMSMITH_ADMIT_DELAY_MS", delay)
        eng = Engine(str(tiny_llama), async_scheduling=True, **KW)
        sp = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
        out: dict = {}
        eng.add_request("a", PROMPTS[0], sp)
        for i in range(40):
            if i in (2, 3):
                eng.add_request(f"n{i}", PROMPTS[i - 1], sp)
            for o in eng.step():
                out[o.request_id] = o.token_ids
            if not eng.has_unfinished() and i > 3:
                break
        return out

    base, delayed = run("0"), run("5")
    assert set(base) == {"a", "n2", "n3"} and delayed == base


# ------------------------------------------------------------------ the frozen heap (LMSMITH_GC_FREEZE)
@pytest.mark.parametrize("setting", [None, "0"])
def test_server_freezes_the_heap_while_it_serves(tiny_llama, monkeypatch, setting):
    import gc

    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import BackgroundServer, create_app

    if setting is None:
        monkeypatch.delenv("LMSMITH_GC_FREEZE", raising=False)
    else:
        monkeypatch.setenv("LMSMITH_GC_FREEZE", setting)
    gc.unfreeze()
    with BackgroundServer(create_app(Engine(str(tiny_llama), **KW), "tiny", max_num_seqs=4)) as srv:
        frozen = gc.get_freeze_count()
        with httpx.Client(base_url=srv.url, timeout=60) as c:
            r = c.post("/v1/completions", json={"model": "tiny", "prompt": PROMPTS[0], "max_tokens": 2})
            assert r.status_code == 200
    if setting == "0":
        assert frozen == 0
    else:
        assert frozen > 1000  # the loaded server (torch, the model, the web stack) is out of the collector's way
    assert gc.get_freeze_count() == 0  # stopped: a retired engine's cycles are collectable again


def test_server_uses_uvloop_and_httptools_when_installed(tiny_llama):
    """uvicorn's fast event loop and HTTP implementation (dependencies): the server picks them up."""
    import asyncio

    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import create_app, make_uvicorn_server

    pytest.importorskip("httptools")
    uvloop = pytest.importorskip("uvloop")
    server = make_uvicorn_server(create_app(Engine(str(tiny_llama), **KW), "tiny"), "127.0.0.1", 0)
    server.config.load()
    assert "httptools" in server.config.http_protocol_class.__module__
    factory = server.config.get_loop_factory() if hasattr(server.config, "get_loop_factory") else None
    if factory is not None:  # uvicorn >= 0.36
        loop = factory()
        try:
            assert isinstance(loop, uvloop.Loop)
        finally:
            loop.close()
    else:
        assert server.config.loop in ("auto", "uvloop") and asyncio.get_event_loop_policy() is not None


def test_a_failing_step_log_never_stops_serving(tiny_llama, tmp_path, monkeypatch):
    import lmsmith.serve.async_engine as ae
    from lmsmith.serve.engine import Engine

    def broken(*a, **k):
        raise RuntimeError("trace bug")

    monkeypatch.setenv("LMSMITH_STEP_LOG", str(tmp_path / "steps.jsonl"))
    monkeypatch.setattr(ae, "loop_record", broken)
    assert len(serve_and_log(Engine(str(tiny_llama), **KW))) == len(PROMPTS)  # every request still answered
    assert [r.get("event") for r in read_log(tmp_path / "steps.jsonl")] == ["start"]


# ------------------------------------------------------------------ the GIL switch interval (thread placement)
def test_thread_placement_shortens_the_gil_switch_interval_while_serving(tiny_llama, monkeypatch):
    import sys

    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import BackgroundServer, create_app

    monkeypatch.delenv("LMSMITH_SWITCH_INTERVAL_MS", raising=False)
    before = sys.getswitchinterval()
    a = BackgroundServer(create_app(Engine(str(tiny_llama), **KW), "tiny", max_num_seqs=4)).__enter__()
    try:
        assert sys.getswitchinterval() == pytest.approx(min(before, 0.001))
        with BackgroundServer(create_app(Engine(str(tiny_llama), **KW), "tiny", max_num_seqs=4)) as srv:
            with httpx.Client(base_url=srv.url, timeout=60) as c:
                assert c.post("/v1/completions", json={"model": "tiny", "prompt": PROMPTS[0],
                                                       "max_tokens": 2}).status_code == 200
        assert sys.getswitchinterval() == pytest.approx(min(before, 0.001))  # the other server still runs
    finally:
        a.__exit__(None, None, None)
    assert sys.getswitchinterval() == pytest.approx(before)
    monkeypatch.setenv("LMSMITH_SWITCH_INTERVAL_MS", "0")
    with BackgroundServer(create_app(Engine(str(tiny_llama), **KW), "tiny", max_num_seqs=4)):
        assert sys.getswitchinterval() == pytest.approx(before)
