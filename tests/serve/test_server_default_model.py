"""The server on the real default model (slow): right answers, and tools through a template without tool support."""

from __future__ import annotations

import json

import jsonschema
import pytest

pytestmark = pytest.mark.slow
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]


@pytest.fixture(scope="module")
def oai(default_model_dir):
    from openai import OpenAI

    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import BackgroundServer, create_app

    engine = Engine(str(default_model_dir), max_num_seqs=8, max_model_len=2048)
    with BackgroundServer(create_app(engine, "smollm2", max_num_seqs=8)) as srv:
        yield OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=120)


def test_answers_the_question(oai):
    r = oai.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=16, temperature=0)
    assert r.choices[0].message.content == "The capital of France is Paris."
    streamed = "".join(c.choices[0].delta.content or "" for c in oai.chat.completions.create(
        model="smollm2", messages=QUESTION, max_tokens=16, temperature=0, stream=True))
    assert streamed == r.choices[0].message.content


def test_forced_tool_call_on_a_template_without_tools(oai):
    tool = {"type": "function", "function": {"name": "get_weather", "description": "current weather in a city",
            "parameters": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 30}},
                           "required": ["city"], "additionalProperties": False}}}
    r = oai.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": "Weather in Prague?"}],
                                    tools=[tool], tool_choice="required", max_tokens=40, temperature=0)
    call = r.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    args = json.loads(call.function.arguments)
    jsonschema.validate(args, tool["function"]["parameters"])
    assert "prague" in args["city"].lower()
