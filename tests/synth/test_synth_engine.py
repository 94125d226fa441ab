"""`lmsmith synth` on the in-process engine (tiny random model): JSON-schema transforms are decoded under the
schema and always validate; `synth tools` conversations carry schema-valid arguments and train with `train sft`."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from fake_openai import FakeOpenAI
from lmsmith.cli import main

TOOLS = [
    {"type": "function", "function": {
        "name": "get_weather", "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"]}}},
    {"name": "book_table", "description": "Book a restaurant table",
     "parameters": {"type": "object", "properties": {
         "people": {"type": "integer", "minimum": 1, "maximum": 12}, "vegetarian": {"type": "boolean"}},
         "required": ["people"]}},
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_tool_records(recs: list[dict]) -> None:
    schemas = {t.get("function", t)["name"]: t.get("function", t)["parameters"] for t in TOOLS}
    for r in recs:
        roles = [m["role"] for m in r["messages"]]
        assert roles == ["user", "assistant", "tool", "assistant"]
        call = r["messages"][1]["tool_calls"][0]
        assert call["id"] == r["messages"][2]["tool_call_id"]
        jsonschema.validate(json.loads(call["function"]["arguments"]), schemas[call["function"]["name"]])
        assert r["tools"][0]["function"]["name"] == call["function"]["name"]
        assert r["metadata"]["generator"] == "tools" and r["metadata"]["tool"] == call["function"]["name"]


def sft(tiny_ref: str, data: Path, tmp_path: Path) -> int:
    return main(["train", "sft", "--model", tiny_ref, "--data", str(data), "--steps", "2", "--seq-len", "1024",
                 "--batch-size", "2", "--lora-r", "4", "--warmup-steps", "0", "--no-mlflow", "--no-plot",
                 "--workers", "1", "--run-dir", str(tmp_path / "run"), "--output-name", "tiny-tools"])


def test_transform_json_schema_on_engine_always_validates(tiny_ref, tmp_path):
    schema = {"type": "object", "properties": {"label": {"enum": ["positive", "negative"]},
                                               "stars": {"type": "integer", "minimum": 1, "maximum": 5},
                                               "spam": {"type": "boolean"}}, "required": ["label", "stars", "spam"]}
    (tmp_path / "schema.json").write_text(json.dumps(schema))
    rows = [{"id": i, "text": f"Recenze {i}: jídlo bylo {'skvělé' if i % 2 else 'hrozné'}."} for i in range(6)]
    (tmp_path / "r.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    assert main(["synth", "transform", "--model", tiny_ref, "--device", "cpu", "--input", str(tmp_path / "r.jsonl"),
                 "--output", str(tmp_path / "o.jsonl"), "--instruction", "Classify the review.",
                 "--json-schema", str(tmp_path / "schema.json"), "--max-tokens", "48", "--temperature", "1.0"]) == 0
    recs = read_jsonl(tmp_path / "o.jsonl")
    assert len(recs) == 6  # constrained decoding: nothing to reject
    for r in recs:
        jsonschema.validate(json.loads(r["messages"][-1]["content"]), schema)
        assert r["metadata"]["model"] == "tiny@1"


def test_tools_from_fake_endpoint_validate_and_train(tiny_ref, tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    with FakeOpenAI() as srv:
        assert main(["synth", "tools", "--endpoint", srv.url, "--api-model", "fake", "--input", str(tmp_path / "tools.json"),
                     "--output", str(tmp_path / "t.jsonl"), "--n", "3", "--language", "cs"]) == 0
        assert srv.count == 2 * 3 * 4
        args_calls = [b for b in srv.requests if b.get("response_format")]
        assert len(args_calls) == 6 and all(b["response_format"]["json_schema"]["strict"] for b in args_calls)
    recs = read_jsonl(tmp_path / "t.jsonl")
    assert len(recs) == 6
    check_tool_records(recs)
    assert sft(tiny_ref, tmp_path / "t.jsonl", tmp_path) == 0


def test_tools_on_engine_arguments_valid_and_train(tiny_ref, tmp_path):
    (tmp_path / "tools.json").write_text(json.dumps(TOOLS))
    assert main(["synth", "tools", "--model", tiny_ref, "--device", "cpu", "--input", str(tmp_path / "tools.json"),
                 "--output", str(tmp_path / "t.jsonl"), "--n", "2", "--max-tokens", "24"]) == 0
    recs = read_jsonl(tmp_path / "t.jsonl")
    m = json.loads((tmp_path / "t.jsonl.manifest.json").read_text())
    assert len(recs) >= 2, m["rejects"]  # random weights: a request may come out empty, arguments never invalid
    assert not any(k.startswith("arguments") for k in m["rejects"])
    check_tool_records(recs)
    assert sft(tiny_ref, tmp_path / "t.jsonl", tmp_path) == 0
