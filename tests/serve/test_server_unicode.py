"""A lone surrogate anywhere in a request is a 400 naming the field, not a 500 (issue 15, item 10)."""

from __future__ import annotations

import httpx
import pytest

from conftest import API_KEY, MODEL

H = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}


@pytest.mark.parametrize("path,body,param", [
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "hi \\ud800"}]}',
     "messages.0.content"),
    ("/v1/chat/completions", '{"model": "tiny", "messages": [{"role": "user", "content": "hi"}], "stop": ["\\udfff"]}',
     "stop.0"),
    ("/v1/chat/completions", '{"model": "tiny\\ud800", "messages": [{"role": "user", "content": "hi"}]}', "model"),
    ("/v1/completions", '{"model": "tiny", "prompt": "x\\ud800y"}', "prompt"),
    ("/v1/completions", '{"model": "tiny", "prompt": ["ok", "\\ud800"]}', "prompt.1"),
])
def test_lone_surrogate_is_a_400(server, path, body, param):
    r = httpx.post(server.url + path, content=body.encode(), headers=H, timeout=30)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert "surrogate" in err["message"] and err["param"] == param


def test_valid_astral_characters_still_work(server):
    r = httpx.post(server.url + "/v1/chat/completions", headers=H, timeout=30,
                   json={"model": MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi \U0001F600"}]})
    assert r.status_code == 200
