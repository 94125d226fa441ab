"""`lmsmith generate` runs on the engine: streamed text equals the engine's answer; bad input is one line."""

from __future__ import annotations

import json

import pytest

from lmsmith.cli import main
from lmsmith.serve import LLM, SamplingParams


def test_generate_cli_streams_engine_output(tiny_ref, capsys):
    assert main(["generate", tiny_ref, "--prompt", "Praha je", "--max-tokens", "8"]) == 0
    printed = capsys.readouterr().out
    llm = LLM(tiny_ref)
    ref = llm.generate("Praha je", SamplingParams(max_tokens=8, temperature=0), use_tqdm=False)[0].outputs[0].text
    assert printed.rstrip("\n") == ref.rstrip("\n")


def test_generate_cli_json_schema_and_errors(tiny_ref, capsys, tmp_path):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(schema))
    assert main(["generate", tiny_ref, "--prompt", "x", "--chat", "--json-schema", str(path), "--max-tokens", "20"]) == 0
    assert isinstance(json.loads(capsys.readouterr().out)["ok"], bool)
    with pytest.raises(SystemExit) as e:  # a usage error: checked by the parser, before any loading
        main(["generate", tiny_ref, "--prompt", "x", "--top-p", "0"])
    assert e.value.code == 2 and "argument --top-p: must be > 0" in capsys.readouterr().err
    assert main(["generate", tiny_ref, "--prompt", "x", "--json-schema", "{nope"]) == 1
    assert "--json-schema" in capsys.readouterr().err


@pytest.mark.parametrize("setting", ["1", "0"])
def test_generate_runs_with_the_heap_frozen_and_gives_it_back(tiny_ref, monkeypatch, setting):
    import gc

    monkeypatch.setenv("LMSMITH_GC_FREEZE", setting)
    llm = LLM(tiny_ref, device="cpu")
    seen = []
    step = llm.engine.step
    llm.engine.step = lambda: seen.append(gc.get_freeze_count()) or step()
    gc.unfreeze()
    out = llm.generate(["hello"], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True), use_tqdm=False)
    assert len(out[0].outputs[0].token_ids) == 3 and seen
    assert (min(seen) > 0) == (setting == "1") and gc.get_freeze_count() == 0
