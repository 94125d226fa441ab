"""The engine in its own process (`lmsmith serve --engine-process`): the server's guarantees hold across the pipe.

A tiny random model on CPU in a spawned child: greedy output equal to the in-process engine, streaming, a client
that leaves frees its KV blocks, 429 past capacity, the request timeout, errors raised in the child reach the
handler, a child that dies answers 500 then 503 (never a hang), and the child exits with its parent."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from lmsmith.errors import LmsmithError

PROMPT = [5, 6, 7, 8, 9]
KW = dict(max_num_seqs=2, block_size=4, max_num_batched_tokens=64, device="cpu")


def wait_for(cond, timeout: float = 20.0) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory) -> Path:
    from lmsmith.tiny import build_tiny

    # a long context, so the requests that must stay in flight (429, timeout) cannot finish first on a fast machine
    return build_tiny(tmp_path_factory.mktemp("proc") / "tiny", "llama", max_position_embeddings=4096)


@pytest.fixture(scope="module")
def psrv(tiny_llama):
    """A server whose engine runs in a child process: 2 running + 1 waiting admitted, the 4th gets 429."""
    from lmsmith.serve.engine_process import EngineClient
    from lmsmith.serve.server import BackgroundServer, create_app

    engine = EngineClient(str(tiny_llama), **KW)
    srv = BackgroundServer(create_app(engine, "tiny", max_num_seqs=2, max_queue=1)).__enter__()
    srv.engine = engine
    srv.aeng = srv.app.state.lmsmith.async_engine
    yield srv
    srv.__exit__(None, None, None)
    assert not engine.proc.is_alive()  # the server's shutdown stopped the child


def complete(srv, **kw) -> httpx.Response:
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 10, "temperature": 0} | kw
    return httpx.post(srv.url + "/v1/completions", json=body, timeout=60)


def idle(srv) -> bool:
    s = srv.aeng.stats()
    return s.get("running") == 0 and s.get("waiting") == 0 and s.get("kv_blocks_used") == 0 and not srv.aeng.in_flight


def test_greedy_output_equals_the_in_process_engine(psrv, tiny_llama):
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.sampling_params import SamplingParams

    r = complete(psrv, max_tokens=12)
    assert r.status_code == 200, r.text
    got = r.json()["choices"][0]
    assert r.json()["usage"]["completion_tokens"] == 12 and got["finish_reason"] == "length"
    local = Engine(str(tiny_llama), **KW)
    local.add_request("a", PROMPT, SamplingParams(max_tokens=12, temperature=0))
    text = ""
    while local.has_unfinished():
        for out in local.step():
            text = out.text
    assert got["text"] == text
    # streamed deltas add up to the same text; the phases of TTFT and the child's step counters reach /metrics
    with httpx.stream("POST", psrv.url + "/v1/completions", timeout=60, json={
            "model": "tiny", "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "stream": True}) as s:
        lines = [ln[6:] for ln in s.iter_lines() if ln.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    chunks = [json.loads(ln) for ln in lines[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert wait_for(lambda: psrv.aeng.stats().get("generation_tokens", 0) >= 24)
    metrics = httpx.get(psrv.url + "/metrics").text
    assert 'lmsmith_ttft_phase_seconds_count{phase="prefill"}' in metrics
    steps = [ln for ln in metrics.splitlines() if ln.startswith("lmsmith_engine_steps_total ")]
    assert steps and float(steps[0].split()[1]) >= 24


def test_n_samples_and_stop_strings_cross_the_pipe(psrv):
    r = complete(psrv, max_tokens=8, temperature=1.0, seed=3, n=2)
    assert r.status_code == 200
    choices = r.json()["choices"]
    assert len(choices) == 2 and r.json()["usage"]["completion_tokens"] == 16
    full = complete(psrv, max_tokens=12).json()["choices"][0]["text"]
    stop = full[4:7]
    cut = complete(psrv, max_tokens=12, stop=[stop]).json()["choices"][0]
    assert cut["finish_reason"] == "stop" and cut["text"] == full[:full.index(stop)]


def test_client_leaving_aborts_and_frees_kv_blocks(psrv):
    before = psrv.aeng.stats().get("generation_tokens", 0)
    with httpx.stream("POST", psrv.url + "/v1/completions", timeout=60, json={
            "model": "tiny", "prompt": PROMPT, "max_tokens": 4000, "temperature": 0, "stream": True}) as s:
        lines = s.iter_lines()
        for _ in range(3):
            next(lines)
        assert psrv.aeng.in_flight == 1
    assert wait_for(lambda: idle(psrv)), psrv.aeng.stats()  # the child aborted it: no running sequence, no blocks
    assert psrv.aeng.stats()["generation_tokens"] - before < 4000


def test_capacity_429_and_request_timeout(psrv):
    body = {"model": "tiny", "prompt": PROMPT, "max_tokens": 4000, "temperature": 0, "stream": True}
    with httpx.Client(timeout=60) as client, contextlib.ExitStack() as stack:
        for _ in range(3):  # 2 running + 1 waiting: headers come back once the child took each one
            s = stack.enter_context(client.stream("POST", psrv.url + "/v1/completions", json=body))
            assert s.status_code == 200
        r = complete(psrv)
        assert r.status_code == 429 and r.json()["error"]["code"] == "queue_full" and r.headers["retry-after"]
    assert wait_for(lambda: idle(psrv)), psrv.aeng.stats()
    psrv.aeng.request_timeout = 0.5
    try:
        r = complete(psrv, max_tokens=4000)
        assert r.status_code == 408 and r.json()["error"]["code"] == "request_timeout"
    finally:
        psrv.aeng.request_timeout = 600.0
    assert wait_for(lambda: idle(psrv)), psrv.aeng.stats()
    assert complete(psrv, max_tokens=3).status_code == 200


def test_errors_raised_in_the_child_reach_the_caller(psrv):
    from lmsmith.serve.sampling_params import SamplingParams

    async def add(rid, prompt):
        h = await psrv.aeng.add(rid, prompt, SamplingParams(max_tokens=2))
        h.close()

    loop = psrv.aeng._loop
    with pytest.raises(LmsmithError, match="out of range"):  # Engine.encode, in the child
        asyncio.run_coroutine_threadsafe(add("bad", [10**9]), loop).result(30)
    asyncio.run_coroutine_threadsafe(add("good", PROMPT), loop).result(30)
    assert wait_for(lambda: idle(psrv))


def test_a_load_error_in_the_child_is_one_clear_error(tiny_llama):
    from lmsmith.serve.engine_process import EngineClient

    with pytest.raises(LmsmithError, match="exceeds the model's context"):
        EngineClient(str(tiny_llama), **(KW | {"max_model_len": 10**7}))


def test_a_dead_child_fails_requests_then_answers_503(tiny_llama):
    from lmsmith.serve.engine_process import EngineClient
    from lmsmith.serve.server import BackgroundServer, create_app

    engine = EngineClient(str(tiny_llama), **KW)
    with BackgroundServer(create_app(engine, "tiny", max_num_seqs=2)) as srv:
        with httpx.stream("POST", srv.url + "/v1/completions", timeout=60, json={
                "model": "tiny", "prompt": PROMPT, "max_tokens": 4000, "temperature": 0, "stream": True}) as s:
            lines = s.iter_lines()
            next(lines)
            os.kill(engine.proc.pid, signal.SIGKILL)  # what the OOM killer or a segfault does
            rest = [ln for ln in lines if ln.startswith("data: ")]
        assert rest[-1] == "data: [DONE]"
        err = json.loads(rest[-2][6:])["error"]
        assert "engine process exited unexpectedly" in err["message"] and err["type"] == "internal_error"
        r = httpx.post(srv.url + "/v1/completions", json={"model": "tiny", "prompt": PROMPT, "max_tokens": 2}, timeout=30)
        assert r.status_code == 503 and r.json()["error"]["code"] == "engine_failed"
        h = httpx.get(srv.url + "/health", timeout=10)
        assert h.status_code == 503 and "exited" in h.json()["error"]
    assert engine.closed


@pytest.mark.slow  # a Python subprocess that spawns the engine: two torch imports, ~15 s on 2 cores
def test_the_child_exits_when_its_parent_dies(tiny_llama, tmp_path):
    script = textwrap.dedent(f"""
        import os, sys
        from lmsmith.serve.engine_process import EngineClient
        if __name__ == "__main__":
            e = EngineClient({str(tiny_llama)!r}, **{KW!r})
            print(e.proc.pid, flush=True)
            os._exit(3)  # no atexit, no close(): a crash of the server process
    """)
    (tmp_path / "parent.py").write_text(script)
    out = subprocess.run([sys.executable, str(tmp_path / "parent.py")], capture_output=True, text=True, timeout=300,
                         env=os.environ | {"PYTHONPATH": os.pathsep.join(sys.path)})
    assert out.returncode == 3, out.stderr
    pid = int(out.stdout.split()[0])

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        with contextlib.suppress(OSError):  # a zombie (reparented, not yet reaped) counts as gone
            return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"
        return False

    assert wait_for(gone, 15)


# ------------------------------------------------------------- the same protocol without a spawn (fast, any engine)
class CoreInThread:
    """An EngineClient stand-in: the real EngineCore loop and pipes, in a thread of this process, around any
    engine (here the FakeEngine, whose step we can make fail)."""

    in_process = False

    def __init__(self, engine):
        import multiprocessing as mp
        import threading
        from types import SimpleNamespace

        from lmsmith.serve.engine_process import EngineCore

        self.inner = engine
        self.tokenizer, self.max_model_len, self.vocab_size = engine.tokenizer, engine.max_model_len, engine.vocab_size
        self.max_num_seqs = engine.max_num_seqs
        cmd_r, self._cmd = mp.Pipe(duplex=False)
        self._out, out_w = mp.Pipe(duplex=False)
        self.core = EngineCore(engine, cmd_r, out_w, os.getppid())
        self.thread = threading.Thread(target=self.core.run, daemon=True)
        self.thread.start()
        self.closed, self.last_stats = False, {}
        self.proc = SimpleNamespace(join=lambda timeout=None: None, exitcode=None)

    def send(self, msg):
        self._cmd.send(msg)

    def fileno(self):
        return self._out.fileno()

    def poll(self):
        return self._out.poll()

    def recv(self):
        return self._out.recv()

    def stats(self):
        return self.last_stats

    def close(self):
        if not self.closed:
            self.closed = True
            self._cmd.send(("stop",))
            self.thread.join(10)


@pytest.fixture
def piped(make_server, tiny_dir):
    from fake_engine import FakeEngine

    core = CoreInThread(FakeEngine(tiny_dir))
    srv = make_server(engine=core, api_key=None)
    yield srv
    srv.__exit__(None, None, None)
    assert not core.thread.is_alive()  # the server's shutdown stopped the core


def chat(srv, **kw) -> httpx.Response:
    body = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20} | kw
    return httpx.post(srv.url + "/v1/chat/completions", json=body, timeout=30)


def test_a_failing_step_in_the_core_fails_its_requests_and_serving_goes_on(piped):
    engine = piped.engine.inner
    real_step = engine.step
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real_step()

    engine.step = flaky
    r = chat(piped)
    assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
    ok = chat(piped, max_tokens=3)
    assert ok.status_code == 200 and ok.json()["usage"]["completion_tokens"] == 3
    assert httpx.get(piped.url + "/health").status_code == 200


def test_outputs_cross_the_pipe_as_the_engine_made_them(piped, make_server, tiny_dir):
    from fake_engine import FakeEngine

    direct = make_server(engine=FakeEngine(tiny_dir), api_key=None)
    for kw in ({"n": 2, "seed": 1}, {"logprobs": True, "top_logprobs": 2}, {"stop": ["capital"]}):
        a, b = chat(direct, **kw).json(), chat(piped, **kw).json()
        for x in (a, b):
            x.pop("id"), x.pop("created")
        assert a == b
    lines = []
    with httpx.stream("POST", piped.url + "/v1/chat/completions", timeout=30, json={
            "model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "stream": True}) as s:
        lines = [ln for ln in s.iter_lines() if ln.startswith("data: ")]
    text = "".join(json.loads(ln[6:])["choices"][0]["delta"].get("content") or "" for ln in lines[:-1])
    assert text == chat(direct).json()["choices"][0]["message"]["content"]


# ------------------------------------------------------------- delivery: packed deltas, coalesced per stream
def test_packed_deltas_coalesce_into_one_output_per_sample():
    from lmsmith.serve.async_engine import Inbox, Tracked
    from lmsmith.serve.engine import RequestOutput
    from lmsmith.serve.engine_process import ProcessAsyncEngine, pack_output
    from lmsmith.serve.sequence import RequestMetrics

    m = RequestMetrics(1.0, 2.0, 3.0)
    ids, text, outs = [], "", []
    for k, (tok, piece) in enumerate([(7, "a"), (8, "b"), (9, "c"), (10, "d")]):
        ids, text = ids + [tok], text + piece
        done = k == 3
        outs.append(RequestOutput("r", 0, [tok], piece, list(ids), text, done, "length" if done else None, None, None,
                                  [1, 2], 5 if k == 0 else 0, m))
    packed = [pack_output(o) for o in outs]
    assert [len(p) for p in packed] == [11, 4, 4, 11]  # mid-stream outputs cross the pipe as 4 fields
    t = Tracked(Inbox(), n=1, prompt=[1, 2])
    boom = RuntimeError("boom")
    got = ProcessAsyncEngine.coalesce(None, t, packed[:3] + [boom] + packed[3:])
    assert [type(x) for x in got] == [RequestOutput, RuntimeError, RequestOutput]
    first, _, last = got
    assert first.new_token_ids == [7, 8, 9] and first.text_delta == "abc" and first.token_ids == [7, 8, 9]
    assert first.metrics.first_token_time == 3.0 and first.num_cached_tokens == 5 and not first.finished
    assert last.new_token_ids == [10] and last.text == "abcd" and last.token_ids == [7, 8, 9, 10] and last.finished
    # two samples interleaved: runs of one sample merge, the order between samples is kept
    t2 = Tracked(Inbox(), n=2, prompt=[1])
    two = [("q", 0, [1], "x"), ("q", 0, [2], "y"), ("q", 1, [3], "z"), ("q", 0, [4], "w")]
    got = ProcessAsyncEngine.coalesce(None, t2, two)
    assert [(o.index, o.new_token_ids, o.text) for o in got] == [(0, [1, 2], "xy"), (1, [3], "z"), (0, [4], "xyw")]


@pytest.mark.parametrize("placement", ["piped", "thread"])
def test_a_stream_that_fell_behind_catches_up_in_one_chunk(placement, request, make_server, tiny_dir):
    """The server's event loop stalls mid-stream (as under a flood of other streams' tokens): the tokens made
    meanwhile go out as one multi-token chunk, not one chunk (and one loop turn) each, and the text is whole.
    Both placements: the engine behind a pipe, and in a thread of the server."""
    from fake_engine import FakeEngine

    piped = request.getfixturevalue("piped") if placement == "piped" else \
        make_server(engine=FakeEngine(tiny_dir), api_key=None)
    loop = piped.app.state.lmsmith.async_engine._loop
    body = {"model": "tiny", "prompt": "Hi", "max_tokens": 40, "ignore_eos": True, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    pieces, stalled = [], False
    with httpx.stream("POST", piped.url + "/v1/completions", json=body, timeout=30) as s:
        for ln in s.iter_lines():
            if not ln.startswith("data: {"):
                continue
            d = json.loads(ln[6:])
            if d["choices"]:
                pieces.append(d["choices"][0]["text"])
                if not stalled:
                    stalled = True
                    loop.call_soon_threadsafe(time.sleep, 0.3)  # the engine (2 ms a step) runs on meanwhile
            else:
                usage = d["usage"]
    assert usage["completion_tokens"] == 40
    whole = httpx.post(piped.url + "/v1/completions", json=body | {"stream": False}, timeout=30).json()
    assert "".join(pieces) == whole["choices"][0]["text"]
    assert len(pieces) < 30  # >= 40 chunks without coalescing


def test_engine_process_is_the_default_on_one_gpu_only():
    import torch

    from lmsmith.serve.engine_process import default_engine_process

    assert default_engine_process("cuda") and default_engine_process("cuda:1")
    assert not default_engine_process("cpu")
    assert not default_engine_process("cuda", tensor_parallel_size=2)  # the ranks run from the HTTP process
    assert default_engine_process(None) == torch.cuda.is_available()
