"""A forced tool call cut short by max_tokens is still a tool call, streamed or not (issue 15, item 14)."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import API_KEY, MODEL
from lmsmith.data import toolcalls as tc

H = {"Authorization": f"Bearer {API_KEY}"}
WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city", "days"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string"}}, "required": ["zone"]}}}
MSGS = [{"role": "user", "content": "Weather in Praha?"}]


def full_output(srv, body) -> str:
    r = httpx.post(srv.url + "/v1/chat/completions", headers=H, timeout=30, json={**body, "max_tokens": 200})
    msg = r.json()["choices"][0]["message"]
    call = msg["tool_calls"][0]["function"]
    return call["arguments"]


@pytest.mark.parametrize("choice,tools", [({"type": "function", "function": {"name": "get_weather"}}, [WEATHER]),
                                          ("required", [WEATHER, CLOCK])])
def test_truncated_forced_call_is_a_tool_call(server, choice, tools):
    body = {"model": MODEL, "messages": MSGS, "tools": tools, "tool_choice": choice}
    full = full_output(server, body)
    n = len(server.engine.tokenizer(full if choice != "required" else
                                    json.dumps({"name": "get_weather", "arguments": json.loads(full)}),
                                    add_special_tokens=False)["input_ids"])
    r = httpx.post(server.url + "/v1/chat/completions", headers=H, timeout=30, json={**body, "max_tokens": n - 2})
    choice0 = r.json()["choices"][0]
    assert choice0["finish_reason"] == "length"
    msg = choice0["message"]
    assert msg["content"] is None and msg["tool_calls"], msg
    call = msg["tool_calls"][0]["function"]
    assert call["name"] == "get_weather"
    assert call["arguments"] and full.startswith(call["arguments"]) and call["arguments"] != full

    # streaming: the same call, assembled from deltas
    name, args, reason, content = None, "", None, ""
    with httpx.stream("POST", server.url + "/v1/chat/completions", headers=H, timeout=30,
                      json={**body, "max_tokens": n - 2, "stream": True}) as s:
        for line in s.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            ch = json.loads(line[6:])["choices"]
            if not ch:
                continue
            d = ch[0]["delta"]
            content += d.get("content") or ""
            for tcall in d.get("tool_calls") or []:
                name = tcall["function"].get("name") or name
                args += tcall["function"].get("arguments") or ""
            reason = ch[0].get("finish_reason") or reason
    assert (name, args, reason, content) == ("get_weather", call["arguments"], "length", "")


def test_truncated_call_parsing():
    f = tc.truncated_forced_call
    assert f(tc.HERMES, "get_weather", '{"city": "Pra', []) == {"name": "get_weather", "arguments": '{"city": "Pra'}
    assert f(tc.HERMES, None, '{"name": "get_time", "arguments": {"zo', ["get_weather", "get_time"]) == \
        {"name": "get_time", "arguments": '{"zo'}
    assert f(tc.HERMES, None, '{"name": "get_t', ["get_weather", "get_time"]) == {"name": "get_time", "arguments": ""}
    assert f(tc.LLAMA3, None, '{"name": "f", "parameters": {"x"', ["f"]) == {"name": "f", "arguments": '{"x"'}
