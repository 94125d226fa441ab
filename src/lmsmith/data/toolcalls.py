"""Tool-call formats per model family: put tools into the prompt, read calls back out of the output.

Models are trained to emit calls in their family's own syntax; the server speaks OpenAI's `tool_calls`.
This module is the translation, with no model logic:

- `detect_format(chat_template)` picks the family's format from its chat template;
- `prepare_messages(...)` turns OpenAI messages into what the template accepts, and, when the template
  ignores `tools` (SmolLM2's does), renders the tool list into the system prompt in that format;
- `forced_call_prefix(...)` / `forced_call_schema(...)` give the text to prefill and the JSON schema that
  constrained decoding enforces when `tool_choice` names a function or is `required`;
- `parse_tool_calls(text, fmt)` splits model output into plain content and calls with JSON-string arguments.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ToolFormat:
    """How one model family writes a call. `start`/`end` delimit one JSON call object."""

    name: str
    start: str
    end: str
    args_key: str = "arguments"


HERMES = ToolFormat("hermes", "<tool_call>", "</tool_call>")  # Qwen2.5, ChatML models, lmsmith.tiny
LLAMA3 = ToolFormat("llama3_json", "<|python_tag|>", "<|eom_id|>", args_key="parameters")
MISTRAL = ToolFormat("mistral", "[TOOL_CALLS]", "", args_key="arguments")
FORMATS = {f.name: f for f in (HERMES, LLAMA3, MISTRAL)}

# Parameter schema used when a function declares none: any object.
ANY_OBJECT: dict[str, Any] = {"type": "object"}


def detect_format(chat_template: str | None) -> ToolFormat:
    """The family's format from its chat template; Hermes style (the most common) when it says nothing."""
    t = chat_template or ""
    if "[TOOL_CALLS]" in t:
        return MISTRAL
    if "<|python_tag|>" in t or "ipython" in t:
        return LLAMA3
    return HERMES


def template_supports_tools(chat_template: str | None) -> bool:
    return bool(chat_template) and "tools" in chat_template


def new_call_id() -> str:
    return "call_" + uuid.uuid4().hex[:24]


def render_call(fmt: ToolFormat, name: str, arguments: str | dict) -> str:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
    body = f'{{"name": {json.dumps(name)}, "{fmt.args_key}": {args}}}'
    if fmt is MISTRAL:
        return f"{fmt.start}[{body}]"
    return f"{fmt.start}{body}{fmt.end}"


def render_tools_prompt(tools: list[dict], fmt: ToolFormat) -> str:
    """System-prompt text describing the tools, for templates that ignore `tools`."""
    lines = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    example = render_call(fmt, "function_name", '{"argument": "value"}')
    return ("You can call these tools (JSON schemas):\n<tools>\n" + lines + "\n</tools>\n"
            f"To call a tool, reply with exactly: {example}")


def prepare_messages(messages: list[dict], tools: list[dict] | None, chat_template: str | None,
                     ) -> tuple[list[dict], list[dict] | None]:
    """Messages (and the `tools` argument) ready for `apply_chat_template`.

    A template with tool support gets the tools and the messages as they are. Otherwise the tools go
    into the system prompt, earlier assistant calls become text in the family's format, tool results
    become user turns, and every content is a string (templates concatenate it)."""
    fmt = detect_format(chat_template)
    if template_supports_tools(chat_template):
        out = []
        for m in messages:
            m = dict(m)
            if m.get("tool_calls"):
                m["tool_calls"] = [_call_for_template(c) for c in m["tool_calls"]]
            out.append(m)
        return out, (tools or None)
    out: list[dict] = []
    for m in messages:
        role, content = m["role"], m.get("content") or ""
        if role == "assistant" and m.get("tool_calls"):
            content += "".join(render_call(fmt, c["function"]["name"], c["function"].get("arguments") or "{}")
                               for c in m["tool_calls"])
        if role == "tool":
            role, content = "user", f"Tool result: {content}"
        out.append({"role": role, "content": content})
    if tools:
        text = render_tools_prompt(tools, fmt)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + text}
        else:
            out.insert(0, {"role": "system", "content": text})
    return out, None


def _call_for_template(call: dict) -> dict:
    """Arguments as a dict, which is what tool-aware templates (Qwen, Llama 3.1) render."""
    fn = dict(call["function"])
    args = fn.get("arguments")
    if isinstance(args, str):
        try:
            fn["arguments"] = json.loads(args) if args.strip() else {}
        except json.JSONDecodeError:
            pass
    return {**call, "function": fn}


def forced_call_prefix(fmt: ToolFormat, name: str | None) -> str:
    """Text prefilled after the generation prompt so the model is already inside a call.

    With a name the prefix ends where the arguments object starts; without one (`required` with several
    tools) it ends where the call object starts."""
    opening = fmt.start + ("[" if fmt is MISTRAL else "")
    if name is None:
        return opening
    return f'{opening}{{"name": {json.dumps(name)}, "{fmt.args_key}": '


def forced_call_schema(fmt: ToolFormat, functions: list[dict], named: bool) -> dict:
    """JSON schema constrained decoding enforces after `forced_call_prefix`."""
    if named:
        return functions[0].get("parameters") or ANY_OBJECT
    options = [{"type": "object",
                "properties": {"name": {"const": f["name"]}, fmt.args_key: f.get("parameters") or ANY_OBJECT},
                "required": ["name", fmt.args_key], "additionalProperties": False} for f in functions]
    return options[0] if len(options) == 1 else {"anyOf": options}


def forced_call_from_output(fmt: ToolFormat, name: str | None, generated: str) -> dict | None:
    """The call produced under constrained decoding: {"name", "arguments"} (arguments a JSON string)."""
    text = generated.strip()
    if name is not None:
        try:
            json.loads(text)
        except json.JSONDecodeError:
            return None
        return {"name": name, "arguments": text}
    obj = _loads_prefix(text)
    return _normalize_call(obj, fmt) if obj is not None else None


def truncated_forced_call(fmt: ToolFormat, name: str | None, generated: str, functions: list[str]) -> dict:
    """The call of a forced `tool_choice` whose output stopped early (max_tokens) inside the call: like
    OpenAI and vLLM, still a tool call, with the arguments as far as they got (exactly as streamed)."""
    text = generated
    if name is not None:
        return {"name": name, "arguments": text}
    m = re.search(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"', text)
    if m:
        name = json.loads(f'"{m.group(1)}"')
    else:  # cut inside the name: the first function it can still be
        partial = re.search(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)$', text)
        seen = partial.group(1) if partial else ""
        name = next((f for f in functions if f.startswith(seen)), functions[0] if functions else "")
    a = re.search(r'"(?:%s|arguments|parameters)"\s*:\s*' % re.escape(fmt.args_key), text)
    return {"name": name, "arguments": text[a.end():] if a else ""}


def parse_tool_calls(text: str, fmt: ToolFormat) -> tuple[str | None, list[dict]]:
    """Split model output into (content, calls); each call is {"name", "arguments": JSON string}.

    Text that only looks like a call but does not parse stays content, so nothing the model said is lost."""
    if fmt.start not in text:
        return text, []
    head, _, rest = text.partition(fmt.start)
    calls: list[dict] = []
    if fmt is MISTRAL:
        obj = _loads_prefix(rest.strip())
        objs = obj if isinstance(obj, list) else [obj] if obj is not None else []
        calls = [c for c in (_normalize_call(o, fmt) for o in objs) if c]
    else:
        pattern = re.escape(fmt.start) + r"\s*(.*?)\s*(?:" + re.escape(fmt.end) + "|$)"
        for m in re.finditer(pattern, fmt.start + rest, flags=re.DOTALL):
            call = _normalize_call(_loads_prefix(m.group(1)), fmt)
            if call:
                calls.append(call)
    if not calls:
        return text, []
    head = head.strip()
    return (head or None), calls


def _loads_prefix(text: str) -> Any:
    """The first JSON value in `text` (trailing text ignored), or None."""
    text = text.strip()
    try:
        obj, _ = json.JSONDecoder().raw_decode(text)
        return obj
    except json.JSONDecodeError:
        return None


def _normalize_call(obj: Any, fmt: ToolFormat) -> dict | None:
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        return None
    args = obj.get(fmt.args_key, obj.get("arguments", obj.get("parameters", {})))
    if isinstance(args, str):
        try:
            json.loads(args)
        except json.JSONDecodeError:
            return None
        return {"name": obj["name"], "arguments": args}
    return {"name": obj["name"], "arguments": json.dumps(args, ensure_ascii=False)}


class StreamingContentFilter:
    """Streams content until a call starts; holds back text that could be the start of the call marker."""

    def __init__(self, fmt: ToolFormat):
        self.marker = fmt.start
        self.text = ""
        self.emitted = 0
        self.in_call = False

    def feed(self, delta: str) -> str:
        """Content safe to send now."""
        self.text += delta
        if self.in_call:
            return ""
        pos = self.text.find(self.marker, self.emitted)
        if pos >= 0:
            self.in_call = True
            out, self.emitted = self.text[self.emitted:pos], pos
            return out
        safe = len(self.text)
        for k in range(min(len(self.marker) - 1, len(self.text)), 0, -1):
            if self.marker.startswith(self.text[-k:]):
                safe = len(self.text) - k
                break
        out, self.emitted = self.text[self.emitted:safe], max(self.emitted, safe)
        return out

    def flush(self) -> str:
        """At the end, content still held back (when no call started)."""
        if self.in_call:
            return ""
        out, self.emitted = self.text[self.emitted:], len(self.text)
        return out
