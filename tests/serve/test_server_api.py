"""The server driven by the official `openai` client: plain, streaming, tools, structured output, n, logprobs."""

from __future__ import annotations

import json
import threading

import jsonschema
import pytest
from fake_engine import SENTENCES

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "weather in a city",
           "parameters": {"type": "object", "properties": {"city": {"type": "string"},
                                                           "days": {"type": "integer"}},
                          "required": ["city", "days"]}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"type": "string", "enum": ["CET", "UTC"]}}, "required": ["zone"]}}}
USER = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_plain_with_usage(client, server):
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=32)
    assert r.object == "chat.completion" and r.model == "tiny"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content == SENTENCES[0]
    assert r.choices[0].finish_reason == "stop"
    expected_prompt = server.engine.tokenizer.apply_chat_template(USER, add_generation_prompt=True, tokenize=True,
                                                                  return_dict=True)["input_ids"]
    assert r.usage.prompt_tokens == len(expected_prompt)
    assert r.usage.completion_tokens == len(server.engine.tokenizer(SENTENCES[0])["input_ids"])
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_chat_params_reach_the_engine(client, server):
    client.chat.completions.create(model="tiny", messages=USER, max_completion_tokens=7, temperature=0.3, top_p=0.9,
                                   seed=5, stop=["zzz"], presence_penalty=0.5, frequency_penalty=-0.5,
                                   extra_body={"top_k": 4, "min_p": 0.1, "repetition_penalty": 1.2})
    p = server.engine.seen_params[-1]
    assert (p.max_tokens, p.temperature, p.top_p, p.seed, p.stop) == (7, 0.3, 0.9, 5, ["zzz"])
    assert (p.presence_penalty, p.frequency_penalty, p.top_k, p.min_p, p.repetition_penalty) == (0.5, -0.5, 4, 0.1, 1.2)


def test_content_parts_and_developer_role(client):
    msgs = [{"role": "developer", "content": "Be brief."},
            {"role": "user", "content": [{"type": "text", "text": "What is the "}, {"type": "text", "text": "capital?"}]}]
    r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=30)
    assert r.choices[0].message.content == SENTENCES[0]


def test_default_max_tokens_fills_the_context(client, server):
    r = client.chat.completions.create(model="tiny", messages=USER)
    assert server.engine.seen_params[-1].max_tokens == server.engine.max_model_len - r.usage.prompt_tokens


def test_length_and_stop(client):
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=3)
    assert r.choices[0].finish_reason == "length" and r.usage.completion_tokens == 3
    r = client.chat.completions.create(model="tiny", messages=USER, stop="capital", max_tokens=30)
    assert r.choices[0].message.content == "Paris is the " and r.choices[0].finish_reason == "stop"


def test_chat_streaming(client):
    stream = client.chat.completions.create(model="tiny", messages=USER, max_tokens=32, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == SENTENCES[0]
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) > 3  # token by token
    assert chunks[0].choices[0].delta.role == "assistant"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_raw_sse_ends_with_done(server):
    import httpx

    with httpx.stream("POST", server.url + "/v1/chat/completions", headers={"Authorization": "Bearer sk-test"},
                      json={"model": "tiny", "messages": USER, "stream": True, "max_tokens": 5}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in r.iter_lines() if ln]
    assert lines[-1] == "data: [DONE]"
    assert all(ln.startswith("data: ") for ln in lines)
    json.loads(lines[-2][6:])


def test_n_and_seed(client):
    r = client.chat.completions.create(model="tiny", messages=USER, n=3, seed=11, max_tokens=30)
    assert [c.index for c in r.choices] == [0, 1, 2]
    again = client.chat.completions.create(model="tiny", messages=USER, n=3, seed=11, max_tokens=30)
    assert [c.message.content for c in r.choices] == [c.message.content for c in again.choices]
    assert all(c.message.content in SENTENCES for c in r.choices)
    s = client.chat.completions.create(model="tiny", messages=USER, n=2, max_tokens=30, stream=True, seed=11)
    texts = {0: "", 1: ""}
    for c in s:
        for ch in c.choices:
            texts[ch.index] += ch.delta.content or ""
    assert [texts[0], texts[1]] == [c.message.content for c in r.choices[:2]]


def test_logprobs(client):
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=4, logprobs=True, top_logprobs=2)
    lp = r.choices[0].logprobs.content
    assert len(lp) == 4 and all(t.logprob <= 0 and len(t.top_logprobs) == 2 for t in lp)
    assert "".join(t.token for t in lp) == r.choices[0].message.content
    c = client.completions.create(model="tiny", prompt="Hello", max_tokens=3, logprobs=1)
    assert len(c.choices[0].logprobs.tokens) == 3 and len(c.choices[0].logprobs.top_logprobs[0]) == 1


def test_json_schema_response(client, server):
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=64, response_format={
        "type": "json_schema", "json_schema": {"name": "city", "schema": schema}})
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)
    assert server.engine.seen_params[-1].json_schema == schema
    r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=64,
                                       response_format={"type": "json_object"})
    assert isinstance(json.loads(r.choices[0].message.content), dict)
    assert server.engine.seen_params[-1].json_object is True


def test_tool_auto_parses_the_models_call(client):
    msgs = [{"role": "user", "content": "CALL_TOOL: weather in Praha?"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=[WEATHER], max_tokens=64)
    m = r.choices[0]
    assert m.finish_reason == "tool_calls"
    assert m.message.content == "Let me check."
    call = m.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_")
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Praha"}


def test_tool_auto_streaming(client):
    msgs = [{"role": "user", "content": "CALL_TOOL please"}]
    chunks = list(client.chat.completions.create(model="tiny", messages=msgs, tools=[WEATHER], max_tokens=64,
                                                 stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert "<tool_call>" not in content and content.strip() == "Let me check."
    calls = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert calls[0].function.name == "get_weather" and json.loads(calls[0].function.arguments) == {"city": "Praha"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_tool_auto_without_a_call_is_plain_content(client):
    r = client.chat.completions.create(model="tiny", messages=USER, tools=[WEATHER], max_tokens=64)
    assert r.choices[0].message.content == SENTENCES[0] and not r.choices[0].message.tool_calls


def test_named_tool_choice_is_constrained(client, server):
    r = client.chat.completions.create(model="tiny", messages=USER, tools=[WEATHER, CLOCK], max_tokens=64,
                                       tool_choice={"type": "function", "function": {"name": "get_weather"}})
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    assert server.engine.seen_params[-1].json_schema == WEATHER["function"]["parameters"]
    # the prompt was prefilled with the call's opening
    assert r.usage.prompt_tokens > 0


def test_named_tool_choice_streams_arguments(client):
    chunks = list(client.chat.completions.create(
        model="tiny", messages=USER, tools=[WEATHER], stream=True, max_tokens=64,
        tool_choice={"type": "function", "function": {"name": "get_weather"}}))
    deltas = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas[0].function.name == "get_weather" and deltas[0].id
    args = "".join(d.function.arguments or "" for d in deltas)
    jsonschema.validate(json.loads(args), WEATHER["function"]["parameters"])
    assert len(deltas) > 2


def test_required_tool_choice_over_several_tools(client, server):
    r = client.chat.completions.create(model="tiny", messages=USER, tools=[CLOCK, WEATHER], tool_choice="required",
                                       max_tokens=64)
    call = r.choices[0].message.tool_calls[0]
    tool = {"get_time": CLOCK, "get_weather": WEATHER}[call.function.name]
    jsonschema.validate(json.loads(call.function.arguments), tool["function"]["parameters"])
    assert "anyOf" in server.engine.seen_params[-1].json_schema


def test_tool_choice_none_and_tool_messages(client, server):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "call_1", "type": "function", "function": {
                "name": "get_weather", "arguments": '{"city": "Praha", "days": 1}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny, 21 C"}]
    r = client.chat.completions.create(model="tiny", messages=msgs, tools=[WEATHER], tool_choice="none", max_tokens=40)
    assert r.choices[0].message.content == SENTENCES[0] and not r.choices[0].message.tool_calls


def test_completions(client, server):
    r = client.completions.create(model="tiny", prompt="The capital of France", max_tokens=40)
    assert r.object == "text_completion" and r.choices[0].text == SENTENCES[0]
    assert r.usage.prompt_tokens == len(server.engine.tokenizer("The capital of France")["input_ids"])
    r = client.completions.create(model="tiny", prompt=["a", "b"], n=2, max_tokens=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    r = client.completions.create(model="tiny", prompt=[5, 6, 7], max_tokens=2, echo=True)
    assert r.choices[0].text.startswith(server.engine.tokenizer.decode([5, 6, 7]))
    chunks = list(client.completions.create(model="tiny", prompt="x", max_tokens=40, stream=True,
                                            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == SENTENCES[0]
    assert chunks[-1].usage.completion_tokens > 0


def test_models_and_health(client, server):
    import httpx

    assert [m.id for m in client.models.list().data] == ["tiny"]
    h = httpx.get(server.url + "/health")
    assert h.status_code == 200 and h.json()["status"] == "ok"


def test_concurrent_clients(client, server):
    results, errors = {}, []

    def worker(i: int) -> None:
        try:
            if i % 2:
                r = client.chat.completions.create(model="tiny", messages=USER, max_tokens=30, seed=i)
                results[i] = r.choices[0].message.content
            else:
                s = client.chat.completions.create(model="tiny", messages=USER, max_tokens=30, seed=i, stream=True)
                results[i] = "".join(c.choices[0].delta.content or "" for c in s if c.choices)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(results[i] == SENTENCES[__import__("random").Random(i).randrange(4)] for i in range(12))


@pytest.mark.parametrize("path", ["/v1/models"])
def test_metrics_after_traffic(client, server, path):
    import httpx

    client.chat.completions.create(model="tiny", messages=USER, max_tokens=5)
    list(client.chat.completions.create(model="tiny", messages=USER, max_tokens=5, stream=True))
    text = httpx.get(server.url + "/metrics").text
    for name in ("lmsmith_time_to_first_token_seconds_count", "lmsmith_time_per_output_token_seconds_bucket",
                 "lmsmith_e2e_request_latency_seconds_sum", "lmsmith_prompt_tokens_total",
                 "lmsmith_generation_tokens_total", "lmsmith_requests_running", "lmsmith_requests_waiting",
                 "lmsmith_kv_cache_usage_ratio", "lmsmith_prefix_cache_hit_rate"):
        assert name in text, name
    assert 'lmsmith_requests_total{endpoint="/v1/chat/completions",status="200"} 2.0' in text
    assert 'lmsmith_request_finish_total{finish_reason="length"} 2.0' in text
    assert "lmsmith_generation_tokens_total 10.0" in text
    assert "lmsmith_time_to_first_token_seconds_count 2.0" in text


def test_streaming_logprobs(client):
    chunks = list(client.chat.completions.create(model="tiny", messages=USER, max_tokens=4, logprobs=True,
                                                 top_logprobs=1, stream=True))
    lps = [t for c in chunks if c.choices and c.choices[0].logprobs for t in c.choices[0].logprobs.content]
    assert len(lps) == 4 and all(len(t.top_logprobs) == 1 for t in lps)
    assert "".join(t.token for t in lps) == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
