"""`lmsmith serve --stream-interval N`: after its first token a stream sends one chunk per N tokens (and the rest at
the end), the text and logprobs unchanged; 1 (the default) sends every token."""

from __future__ import annotations

import pytest
from fake_engine import SENTENCES

from conftest import API_KEY


def chunks(server, **kw):
    from openai import OpenAI

    client = OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30)
    return [c for c in client.completions.create(model="tiny", prompt="hello", max_tokens=64, stream=True,
                                                 logprobs=1, **kw) if c.choices]


def test_stream_interval_groups_tokens_after_the_first(make_server):
    every = chunks(make_server())
    grouped = chunks(make_server(stream_interval=4))
    per_token = [len(c.choices[0].logprobs.tokens) for c in every if c.choices[0].text]
    per_chunk = [len(c.choices[0].logprobs.tokens) for c in grouped if c.choices[0].text]
    assert set(per_token) == {1} and len(per_token) > 6
    assert per_chunk[0] == 1  # the first token is never held back (TTFT unchanged)
    assert all(n >= 4 for n in per_chunk[1:-1]) and sum(per_chunk) == sum(per_token)
    assert len(per_chunk) < len(per_token) / 2
    text = "".join(c.choices[0].text for c in grouped)
    assert text == "".join(c.choices[0].text for c in every) == SENTENCES[0]
    assert [t for c in grouped for t in c.choices[0].logprobs.tokens] == \
        [t for c in every for t in c.choices[0].logprobs.tokens]
    assert grouped[-1].choices[0].finish_reason == every[-1].choices[0].finish_reason == "stop"


def test_stream_interval_holds_each_sample_apart(make_server):
    got = chunks(make_server(stream_interval=3), n=2, seed=1)
    texts = {i: "".join(c.choices[0].text for c in got if c.choices[0].index == i) for i in (0, 1)}
    assert all(t in SENTENCES for t in texts.values())
    assert sorted(c.choices[0].finish_reason for c in got if c.choices[0].finish_reason) == ["stop", "stop"]


def test_stream_interval_must_be_positive(tiny_dir):
    from fake_engine import FakeEngine

    from lmsmith.errors import LmsmithError
    from lmsmith.serve.server import create_app

    with pytest.raises(LmsmithError, match="--stream-interval"):
        create_app(FakeEngine(tiny_dir), "tiny", stream_interval=0)


def test_stream_interval_from_the_environment(make_server, monkeypatch, tiny_dir):
    from fake_engine import FakeEngine

    from lmsmith.errors import LmsmithError
    from lmsmith.serve.server import create_app

    monkeypatch.setenv("LMSMITH_STREAM_INTERVAL", "5")
    srv = make_server()
    per_chunk = [len(c.choices[0].logprobs.tokens) for c in chunks(srv) if c.choices[0].text]
    assert per_chunk[0] == 1 and all(n >= 5 for n in per_chunk[1:-1])
    monkeypatch.setenv("LMSMITH_STREAM_INTERVAL", "four")
    with pytest.raises(LmsmithError, match="LMSMITH_STREAM_INTERVAL"):
        create_app(FakeEngine(tiny_dir), "tiny")
