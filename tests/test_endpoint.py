"""The shared OpenAI-compatible client (lmsmith.endpoint): retries with backoff on 429/5xx honouring
Retry-After, a total deadline per attempt (hangs and trickling servers say "timed out"), bounded concurrency,
rate limit, and one clear error line."""

from __future__ import annotations

import time

import httpx
import pytest

from fake_openai import FakeOpenAI
from lmsmith.endpoint import EndpointClient, parse_retry_after
from lmsmith.errors import LmsmithError

BODY = {"model": "m", "messages": [{"role": "user", "content": "ahoj"}]}


@pytest.fixture
def srv():
    with FakeOpenAI() as s:
        yield s


def test_retries_500_then_answers(srv):
    srv.script = ["500", "500"]
    c = EndpointClient(srv.url, backoff=0.01)
    data = c.post("/chat/completions", BODY)
    assert data["choices"][0]["message"]["content"].startswith("Answer")
    assert srv.count == 3 and c.stats.retries == 2 and c.stats.failures == 0


def test_gives_up_after_max_retries_with_status(srv):
    srv.script = ["500"] * 3
    c = EndpointClient(srv.url, backoff=0.01, max_retries=2)
    with pytest.raises(LmsmithError, match=r"answered HTTP 500.*3 attempts"):
        c.post("/chat/completions", BODY)
    assert srv.count == 3


def test_retry_after_is_honoured(srv):
    srv.script = ["429:1"]
    c = EndpointClient(srv.url, backoff=0.001)  # without Retry-After the wait would be ~1 ms
    t = time.monotonic()
    c.post("/chat/completions", BODY)
    assert 1.0 <= time.monotonic() - t < 4
    assert srv.count == 2


def test_parse_retry_after_forms():
    assert parse_retry_after(httpx.Headers({"Retry-After": "3"})) == 3.0
    assert parse_retry_after(httpx.Headers({"retry-after-ms": "250"})) == 0.25
    assert 9 <= parse_retry_after(httpx.Headers({"Retry-After": "Thu, 01 Jan 2099 00:00:10 GMT"}),
                                  now=4070908800.0) <= 10
    assert parse_retry_after(httpx.Headers({})) is None


def test_hanging_server_times_out(srv):
    srv.script = ["hang"]
    c = EndpointClient(srv.url, timeout=1.0, max_retries=0)
    t = time.monotonic()
    with pytest.raises(LmsmithError, match="timed out") as e:
        c.post("/chat/completions", BODY)
    assert time.monotonic() - t < 5 and "cannot reach" not in str(e.value)


def test_trickling_server_times_out(srv):
    srv.script = ["trickle"]  # one byte every 0.3 s: each read is quick, the whole answer would take a minute
    c = EndpointClient(srv.url, timeout=1.5, max_retries=0)
    t = time.monotonic()
    with pytest.raises(LmsmithError, match="timed out"):
        c.post("/chat/completions", BODY)
    assert time.monotonic() - t < 5


def test_timeout_is_retried_then_succeeds(srv):
    srv.script = ["hang"]
    c = EndpointClient(srv.url, timeout=1.0, backoff=0.01)
    assert c.post("/chat/completions", BODY)["choices"]
    assert srv.count == 2


def test_unreachable_says_cannot_reach():
    c = EndpointClient("http://127.0.0.1:9/v1", max_retries=1, backoff=0.01)
    with pytest.raises(LmsmithError, match="cannot reach"):
        c.post("/chat/completions", BODY)


def test_client_errors_are_not_retried(srv):
    srv.script = ["400"]
    srv.handle_orig = srv.handle

    def handle(h, body, action):
        if action == "400":
            return h.send(400, b'{"error": {"message": "bad model"}}')
        return srv.handle_orig(h, body, action)

    srv.handle = handle
    c = EndpointClient(srv.url, backoff=0.01)
    with pytest.raises(LmsmithError, match="HTTP 400.*bad model"):
        c.post("/chat/completions", BODY)
    assert srv.count == 1


def test_concurrency_is_bounded_and_order_kept():
    with FakeOpenAI(delay=0.05) as srv:
        c = EndpointClient(srv.url, concurrency=3)
        outs = c.map(lambda i: c.chat("m", [{"role": "user", "content": f"q{i}"}])["choices"][0]["message"]["content"],
                     range(12))
        assert srv.max_inflight <= 3 and srv.max_inflight >= 2
        assert [o.endswith(f"q{i}") for i, o in enumerate(outs)] == [True] * 12


def test_rate_limit(srv):
    c = EndpointClient(srv.url, concurrency=4, rate_limit=10)
    t = time.monotonic()
    c.map(lambda i: c.post("/chat/completions", BODY), range(5))
    assert time.monotonic() - t >= 0.38


def test_bad_url_is_one_line():
    with pytest.raises(LmsmithError, match="not an http"):
        EndpointClient("localhost:8000")
