"""Built-in verifiers: programmatic rewards for checkable tasks (`--reward verifier:NAME`).

They follow TRL's reward-function signature, so the same function works in TRL and here:
`fn(prompts, completions, **columns) -> list[float | None]`, where `columns` are the other fields of the
prompt records as lists (one value per completion). `None` means "no opinion" (e.g. a record without an
answer) and is left out of averages.
"""

from __future__ import annotations

import json
import re
from typing import Any

from lmsmith.data.toolcalls import FORMATS, HERMES, parse_tool_calls
from lmsmith.evaluate.metrics import extract_json

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")
FINAL = (re.compile(r"####\s*(-?[\d,.]+)"), re.compile(r"\\boxed\{\s*(-?[\d,.]+)\s*\}"),
         re.compile(r"answer(?: is)?\s*[:=]?\s*\$?(-?[\d,.]+)", re.IGNORECASE))


def parse_number(text: str) -> float | None:
    """The final answer of a completion: '#### 42', '\\boxed{42}', 'answer: 42', else the last number."""
    for pat in FINAL:
        m = pat.findall(text)
        if m:
            v = _num(m[-1])
            if v is not None:
                return v
    nums = NUMBER.findall(text)
    return _num(nums[-1]) if nums else None


def _num(s: str) -> float | None:
    try:
        return float(s.replace(",", "").rstrip("."))
    except ValueError:
        return None


def _column(columns: dict[str, Any], name: str, n: int, *alts: str) -> list[Any]:
    for key in (name, *alts):
        if key in columns:
            return list(columns[key])
    return [None] * n


def exact_number(prompts: list[Any], completions: list[str], answer: list[Any] | None = None,
                 **columns: Any) -> list[float | None]:
    """1.0 when the completion's final number equals the record's `answer` (numerically), else 0.0."""
    answers = list(answer) if answer is not None else _column(columns, "solution", len(completions), "target")
    out: list[float | None] = []
    for c, a in zip(completions, answers):
        if a is None:
            out.append(None)
            continue
        want = a if isinstance(a, (int, float)) else parse_number(str(a))
        got = parse_number(c)
        out.append(float(want is not None and got is not None and abs(got - float(want)) <= 1e-6 * max(1, abs(want))))
    return out


def json_schema(prompts: list[Any], completions: list[str], schema: list[Any] | None = None,
                **columns: Any) -> list[float]:
    """1.0 when the completion holds JSON valid against the record's `schema` (any JSON without one)."""
    import jsonschema

    schemas = list(schema) if schema is not None else [None] * len(completions)
    out = []
    for c, s in zip(completions, schemas):
        try:
            value = extract_json(c)
        except ValueError:
            out.append(0.0)
            continue
        if isinstance(s, str):
            s = json.loads(s)
        if s:
            try:
                jsonschema.validate(value, s)
            except jsonschema.ValidationError:
                out.append(0.0)
                continue
        out.append(1.0)
    return out


def tool_call(prompts: list[Any], completions: list[str], tools: list[Any] | None = None,
              expected: list[Any] | None = None, tool_format: list[Any] | None = None,
              **columns: Any) -> list[float]:
    """1.0 when the completion calls a declared tool with arguments valid against its parameter schema (and,
    when the record has `expected` = {"name", "arguments"?}, the expected function with those arguments)."""
    import jsonschema

    n = len(completions)
    tools_l = list(tools) if tools is not None else [None] * n
    exp_l = list(expected) if expected is not None else [None] * n
    fmt_l = list(tool_format) if tool_format is not None else [None] * n
    out = []
    for c, tl, exp, fname in zip(completions, tools_l, exp_l, fmt_l):
        _, calls = parse_tool_calls(c, FORMATS.get(fname or "", HERMES))
        ok = bool(calls)
        declared = {(t.get("function", t) or {}).get("name"): (t.get("function", t) or {}).get("parameters")
                    for t in (tl or [])}
        for call in calls:
            args = json.loads(call["arguments"])
            if declared:
                if call["name"] not in declared:
                    ok = False
                    break
                schema = declared[call["name"]]
                if schema:
                    try:
                        jsonschema.validate(args, schema)
                    except jsonschema.ValidationError:
                        ok = False
                        break
        if ok and exp:
            first = calls[0]
            ok = first["name"] == exp.get("name") and (
                "arguments" not in exp or json.loads(first["arguments"]) == exp["arguments"])
        out.append(float(ok))
    return out


BUILTIN = {"exact_number": exact_number, "json_schema": json_schema, "tool_call": tool_call}
