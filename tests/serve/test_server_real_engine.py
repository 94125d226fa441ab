"""The server on the real engine with a tiny random model: the OpenAI client end to end.

A random model writes noise, so these tests check what the server guarantees regardless: the wire
format, streaming equal to the non-streamed text under greedy decoding, constrained tool calls and JSON
that validate, and many concurrent clients."""

from __future__ import annotations

import json
import threading

import jsonschema
import pytest

WEATHER = {"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string", "maxLength": 12}, "days": {"type": "integer", "minimum": 1, "maximum": 14}},
    "required": ["city", "days"], "additionalProperties": False}}}
CLOCK = {"type": "function", "function": {"name": "get_time", "parameters": {
    "type": "object", "properties": {"zone": {"enum": ["CET", "UTC"]}}, "required": ["zone"],
    "additionalProperties": False}}}
USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module", params=["thread", "engine-process"])
def real(tmp_path_factory, request):
    """The engine loop in a thread of the server, and in its own process (`lmsmith serve --engine-process`)."""
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.engine_process import EngineClient
    from lmsmith.serve.server import BackgroundServer, create_app
    from lmsmith.tiny import build_tiny

    d = build_tiny(tmp_path_factory.mktemp("real") / "tiny", "llama")
    kind = Engine if request.param == "thread" else EngineClient
    engine = kind(str(d), max_num_seqs=8, block_size=16, max_num_batched_tokens=512, device="cpu")
    srv = BackgroundServer(create_app(engine, "tiny", max_num_seqs=8)).__enter__()
    srv.engine = engine
    yield srv
    srv.__exit__(None, None, None)


@pytest.fixture
def oai(real):
    from openai import OpenAI

    return OpenAI(base_url=real.url + "/v1", api_key="none", max_retries=0, timeout=60)


def test_plain_and_streaming_agree_greedy(oai):
    r = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0)
    assert r.usage.completion_tokens == 12 and r.choices[0].finish_reason == "length"
    chunks = list(oai.chat.completions.create(model="tiny", messages=USER, max_tokens=12, temperature=0, stream=True,
                                              stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == 12
    c = oai.completions.create(model="tiny", prompt="Praha je", max_tokens=5, temperature=0, logprobs=2)
    assert len(c.choices[0].logprobs.tokens) == 5


def test_seeded_sampling_reproduces(oai):
    a = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=10, temperature=1.0, seed=7)
    b = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=10, temperature=1.0, seed=7)
    assert a.choices[0].message.content == b.choices[0].message.content


def test_json_schema_output_validates(oai):
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                               "year": {"type": "integer", "minimum": 0, "maximum": 3000}},
              "required": ["city", "year"], "additionalProperties": False}
    r = oai.chat.completions.create(model="tiny", messages=USER, max_tokens=60, temperature=0, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}})
    assert r.choices[0].finish_reason == "stop", r.choices[0].message.content
    jsonschema.validate(json.loads(r.choices[0].message.content), schema)


@pytest.mark.parametrize("choice", [{"type": "function", "function": {"name": "get_weather"}}, "required"])
def test_forced_tool_call_validates(oai, choice):
    tools = [WEATHER] if isinstance(choice, dict) else [WEATHER, CLOCK]
    r = oai.chat.completions.create(model="tiny", messages=USER, tools=tools, tool_choice=choice, max_tokens=80,
                                    temperature=0)
    msg = r.choices[0].message
    assert r.choices[0].finish_reason == "tool_calls", msg
    call = msg.tool_calls[0]
    schema = {"get_weather": WEATHER, "get_time": CLOCK}[call.function.name]["function"]["parameters"]
    jsonschema.validate(json.loads(call.function.arguments), schema)


def test_concurrent_clients_match_sequential(oai):
    prompts = [f"Question {i}: name a city." for i in range(6)]
    sequential = [oai.completions.create(model="tiny", prompt=p, max_tokens=8, temperature=0).choices[0].text
                  for p in prompts]
    got: dict[int, str] = {}

    def worker(i: int) -> None:
        got[i] = oai.completions.create(model="tiny", prompt=prompts[i], max_tokens=8, temperature=0).choices[0].text

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [got[i] for i in range(6)] == sequential


def test_no_5xx_for_fuzzed_bodies_on_the_real_engine(real):
    from server_fuzz import fuzz_no_5xx

    fuzz_no_5xx(real.url, None, examples=40)


def test_metrics_split_ttft_and_count_engine_steps(real, oai):
    import re
    import urllib.request

    oai.completions.create(model="tiny", prompt=[5, 6, 7, 8], max_tokens=3, temperature=0)
    text = urllib.request.urlopen(real.url + "/metrics").read().decode()
    for phase in ("admit", "queue", "prefill", "deliver"):
        m = re.search(rf'lmsmith_ttft_phase_seconds_count\{{phase="{phase}"\}} (\S+)', text)
        assert m and float(m.group(1)) >= 1, phase
    steps = float(re.search(r"^lmsmith_engine_steps_total (\S+)$", text, re.M).group(1))
    busy = float(re.search(r"^lmsmith_engine_step_seconds_total (\S+)$", text, re.M).group(1))
    assert steps >= 3 and busy > 0
