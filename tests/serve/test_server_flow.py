"""Flow control: bounded queue (429), per-request timeout, cancellation on disconnect, graceful drain (503)."""

from __future__ import annotations

import signal
import threading
import time

import httpx
import pytest

from conftest import API_KEY

HTTP = httpx.Client(timeout=30)  # one client: creating one costs ~0.1 s (TLS setup)
AUTH = {"Authorization": f"Bearer {API_KEY}"}
SLOW = {"step_delay": 0.05, "max_num_seqs": 1}
BODY = {"model": "tiny", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 20, "ignore_eos": True}


def post(server, body=BODY, **kw) -> httpx.Response:
    return HTTP.post(server.url + "/v1/chat/completions", headers=AUTH, json=body, timeout=30, **kw)


class Leave(Exception):
    pass


def wait_until(cond, timeout=10.0):
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "condition not reached"
        time.sleep(0.01)


def in_background(fn):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("r", fn()))
    t.start()
    return t, out


def test_queue_full_is_429_with_retry_after(make_server):
    server = make_server(engine_kwargs=SLOW, max_num_seqs=1, max_queue=1)
    busy = [in_background(lambda: post(server)) for _ in range(2)]  # one running, one waiting
    wait_until(lambda: server.app.state.lmsmith.async_engine.in_flight == 2)
    r = post(server)
    assert r.status_code == 429 and r.headers["Retry-After"] == "1"
    assert r.json()["error"]["type"] == "rate_limit_error"
    for t, out in busy:
        t.join()
        assert out["r"].status_code == 200
    assert post(server, {**BODY, "max_tokens": 2}).status_code == 200  # room again


def test_request_timeout(make_server):
    server = make_server(engine_kwargs=SLOW, request_timeout=0.3)
    r = post(server, {**BODY, "max_tokens": 200})
    assert r.status_code == 408 and r.json()["error"]["code"] == "request_timeout"
    wait_until(lambda: not server.engine.has_unfinished())  # aborted in the engine, blocks freed


def test_streaming_timeout_sends_an_error_event(make_server):
    server = make_server(engine_kwargs=SLOW, request_timeout=0.3)
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={**BODY, "max_tokens": 200, "stream": True}) as r:
        lines = [ln for ln in r.iter_lines() if ln]
    assert '"request_timeout"' in lines[-2] and lines[-1] == "data: [DONE]"


@pytest.mark.parametrize("stream", [False, True])
def test_client_disconnect_aborts_the_request(make_server, stream):
    server = make_server(engine_kwargs={"step_delay": 0.05})
    body = {**BODY, "max_tokens": 1000, "stream": stream}
    with httpx.Client(timeout=0.5) as c:
        try:
            with c.stream("POST", server.url + "/v1/chat/completions", headers=AUTH, json=body) as r:
                if stream:
                    lines = r.iter_lines()  # (kept referenced: dropping it closes the response)
                    next(lines)
                    wait_until(lambda: server.engine.running)
                    raise Leave()  # leave mid-stream: closes the connection
                r.read()
        except (httpx.ReadTimeout, Leave):
            pass
    # the engine stops generating well before max_tokens
    wait_until(lambda: not server.engine.has_unfinished(), timeout=5)
    assert server.engine.counts["generation_tokens"] < 200
    assert server.app.state.lmsmith.async_engine.in_flight == 0


def test_sigterm_drains_in_flight_and_refuses_new(make_server):
    server = make_server(engine_kwargs={"step_delay": 0.03})
    t, out = in_background(lambda: post(server, {**BODY, "max_tokens": 30}))
    wait_until(lambda: server.engine.running)
    server.server.handle_exit(signal.SIGTERM, None)
    for attempt in (lambda: HTTP.get(server.url + "/health"), lambda: post(server)):
        try:  # uvicorn closes the listening socket; a request that still gets in is refused with 503
            r = attempt()
        except httpx.ConnectError:
            continue
        assert r.status_code == 503
    t.join()
    assert out["r"].status_code == 200  # the in-flight request finished
    assert out["r"].json()["usage"]["completion_tokens"] == 30
    server.thread.join(timeout=10)
    assert not server.thread.is_alive()


def test_engine_failure_fails_requests_but_server_survives(make_server):
    server = make_server()
    real_step = server.engine.step
    calls = {"n": 0}

    def flaky():
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("boom")
        return real_step()

    server.engine.step = flaky
    r = post(server)
    assert r.status_code == 500 and "boom" in r.json()["error"]["message"]
    assert post(server, {**BODY, "max_tokens": 3}).status_code == 200


def test_draining_answers_503(make_server):
    server = make_server()
    server.app.state.lmsmith.async_engine.accepting = False  # what SIGTERM sets before uvicorn stops
    assert HTTP.get(server.url + "/health").status_code == 503
    r = post(server)
    assert r.status_code == 503 and r.json()["error"]["code"] == "shutting_down"
