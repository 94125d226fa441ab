"""Tool-call formats: rendering tools into prompts and parsing calls out of model output."""

from __future__ import annotations

import json

from lmsmith.data import toolcalls as tc
from lmsmith.data.chat import CHAT_TEMPLATE

TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
SMOLLM2_TEMPLATE = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
                    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM<|im_end|>\n' }}{% endif %}"
                    "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
                    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def test_detect_format():
    assert tc.detect_format(CHAT_TEMPLATE) is tc.HERMES
    assert tc.detect_format(SMOLLM2_TEMPLATE) is tc.HERMES
    assert tc.detect_format("{{ '[TOOL_CALLS]' }}") is tc.MISTRAL
    assert tc.detect_format("<|python_tag|>{{ x }}") is tc.LLAMA3
    assert tc.template_supports_tools(CHAT_TEMPLATE) and not tc.template_supports_tools(SMOLLM2_TEMPLATE)


def test_parse_hermes_calls():
    text = ('Sure. <tool_call>{"name": "get_weather", "arguments": {"city": "Brno"}}</tool_call>\n'
            '<tool_call>{"name": "get_weather", "arguments": {"city": "Praha"}}</tool_call>')
    content, calls = tc.parse_tool_calls(text, tc.HERMES)
    assert content == "Sure."
    assert [json.loads(c["arguments"])["city"] for c in calls] == ["Brno", "Praha"]
    assert all(isinstance(c["arguments"], str) for c in calls)


def test_parse_other_families_and_garbage():
    _, calls = tc.parse_tool_calls('[TOOL_CALLS][{"name": "f", "arguments": {"a": 1}}, {"name": "g", "arguments": {}}]',
                                   tc.MISTRAL)
    assert [c["name"] for c in calls] == ["f", "g"]
    _, calls = tc.parse_tool_calls('<|python_tag|>{"name": "f", "parameters": {"x": "y"}}<|eom_id|>', tc.LLAMA3)
    assert calls == [{"name": "f", "arguments": '{"x": "y"}'}]
    broken = "I think <tool_call>{not json</tool_call>"
    assert tc.parse_tool_calls(broken, tc.HERMES) == (broken, [])  # nothing lost
    assert tc.parse_tool_calls("no calls here", tc.HERMES) == ("no calls here", [])
    # a call cut off by max_tokens before its closing tag still parses if its JSON is complete
    _, calls = tc.parse_tool_calls('<tool_call>{"name": "f", "arguments": {"a": 1}}', tc.HERMES)
    assert calls[0]["name"] == "f"


def test_prepare_messages_for_a_template_without_tools():
    from jinja2 import Template

    msgs = [{"role": "user", "content": "Weather?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Brno"}'}}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1"}]
    out, tools_arg = tc.prepare_messages(msgs, TOOLS, SMOLLM2_TEMPLATE)
    assert tools_arg is None
    assert out[0]["role"] == "system" and '"get_weather"' in out[0]["content"] and "<tool_call>" in out[0]["content"]
    assert out[2]["content"] == '<tool_call>{"name": "get_weather", "arguments": {"city": "Brno"}}</tool_call>'
    assert out[3] == {"role": "user", "content": "Tool result: sunny"}
    Template(SMOLLM2_TEMPLATE).render(messages=out, add_generation_prompt=True)  # renders: no None contents


def test_prepare_messages_for_a_tool_aware_template():
    msgs = [{"role": "assistant", "content": "", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}]}]
    out, tools_arg = tc.prepare_messages(msgs, TOOLS, CHAT_TEMPLATE)
    assert tools_arg == TOOLS
    assert out[0]["tool_calls"][0]["function"]["arguments"] == {"a": 1}  # templates render dicts


def test_forced_call_prefix_and_schema():
    fns = [t["function"] for t in TOOLS] + [{"name": "noop"}]
    assert tc.forced_call_prefix(tc.HERMES, "get_weather") == '<tool_call>{"name": "get_weather", "arguments": '
    assert tc.forced_call_schema(tc.HERMES, fns[:1], named=True) == TOOLS[0]["function"]["parameters"]
    schema = tc.forced_call_schema(tc.HERMES, fns, named=False)
    assert [o["properties"]["name"]["const"] for o in schema["anyOf"]] == ["get_weather", "noop"]
    # the prefix plus a schema-valid completion parses back as the call
    generated = '{"city": "Praha"}'
    text = tc.forced_call_prefix(tc.HERMES, "get_weather") + generated + "}" + tc.HERMES.end
    assert tc.parse_tool_calls(text, tc.HERMES)[1] == [tc.forced_call_from_output(tc.HERMES, "get_weather", generated)]
    assert tc.forced_call_from_output(tc.HERMES, None, '{"name": "noop", "arguments": {}}') == \
        {"name": "noop", "arguments": "{}"}
    assert tc.forced_call_from_output(tc.HERMES, "f", '{"cut off') is None


def test_streaming_filter_holds_back_a_partial_marker():
    f = tc.StreamingContentFilter(tc.HERMES)
    pieces = [f.feed(d) for d in ["Hello ", "wor", "ld <tool", "_ca", 'll>{"name"', ': "f"}</tool_call>']]
    assert "".join(pieces) == "Hello world "
    assert pieces[2] == "ld "  # "<tool" held back: it may start a call
    assert f.in_call and f.flush() == ""
    g = tc.StreamingContentFilter(tc.HERMES)
    assert g.feed("a <to") == "a " and g.feed("day") == "<today" and g.flush() == ""
    h = tc.StreamingContentFilter(tc.HERMES)
    assert h.feed("x <") == "x " and h.flush() == "<"
