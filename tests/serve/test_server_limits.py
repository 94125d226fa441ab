"""One big request cannot stall or bloat the server (issue 15, item 6): a body limit answered with 413 in
OpenAI's shape, a character check against the context before tokenizing, tokenization off the event loop."""

from __future__ import annotations

import threading
import time

import httpx

from conftest import API_KEY, MODEL

H = {"Authorization": f"Bearer {API_KEY}"}


def test_body_over_the_limit_gets_413(make_server):
    srv = make_server(max_request_bytes=10_000)
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * 20_000}]}
    r = httpx.post(srv.url + "/v1/chat/completions", json=body, headers=H, timeout=30)
    assert r.status_code == 413
    err = r.json()["error"]
    assert err["code"] == "request_too_large" and "--max-request-bytes" in err["message"] and err["type"]

    def chunked():  # no Content-Length: the limit counts what arrives
        yield b'{"model": "tiny", "prompt": "'
        for _ in range(20):
            yield b"y" * 1000
        yield b'"}'

    r = httpx.post(srv.url + "/v1/completions", content=chunked(), headers={**H, "Content-Type": "application/json"},
                   timeout=30)
    assert r.status_code == 413
    ok = httpx.post(srv.url + "/v1/completions", json={"model": MODEL, "prompt": "Paris", "max_tokens": 2},
                    headers=H, timeout=30)
    assert ok.status_code == 200


def test_characters_beyond_the_context_are_refused_before_tokenizing(make_server):
    srv = make_server(engine_kwargs={"max_model_len": 64})
    calls = []
    tok = srv.engine.tokenizer
    real = type(tok).__call__

    def counting(self, *a, **k):
        calls.append(len(a[0]) if a and isinstance(a[0], str) else 0)
        return real(self, *a, **k)

    type(tok).__call__ = counting
    try:
        big = "Paris " * 20_000
        for path, body in (("/v1/chat/completions", {"messages": [{"role": "user", "content": big}]}),
                           ("/v1/completions", {"prompt": big})):
            r = httpx.post(srv.url + path, json={"model": MODEL, **body}, headers=H, timeout=30)
            assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
            assert "characters" in r.json()["error"]["message"]
        assert not any(n > 10_000 for n in calls)  # the big text was never tokenized
    finally:
        type(tok).__call__ = real


class SlowTokenizer:
    """The engine's tokenizer, with each template rendering taking a second (a huge prompt)."""

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)

    def __call__(self, *a, **k):
        return self._tok(*a, **k)

    def __len__(self):
        return len(self._tok)

    def apply_chat_template(self, *a, **k):
        time.sleep(1.0)
        return self._tok.apply_chat_template(*a, **k)


def test_health_answers_while_a_prompt_is_being_prepared(make_server):
    srv = make_server()
    srv.engine.tokenizer = SlowTokenizer(srv.engine.tokenizer)
    done = []

    def chat():
        r = httpx.post(srv.url + "/v1/chat/completions", headers=H, timeout=60,
                       json={"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
        done.append(r.status_code)

    t = threading.Thread(target=chat)
    t.start()
    time.sleep(0.3)  # the request is now rendering its template
    t0 = time.perf_counter()
    assert httpx.get(srv.url + "/health", timeout=30).status_code == 200
    assert time.perf_counter() - t0 < 0.5
    t.join()
    assert done == [200]
