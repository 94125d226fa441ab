"""Reward model (Bradley-Terry, HF-loadable), `align score`, verifiers and rejection sampling on tiny models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmsmith.align.verifiers import exact_number, json_schema, parse_number, tool_call
from lmsmith.cli import main
from lmsmith.train.config import RMConfig
from lmsmith.train.loop import train
from lmsmith.train.tracking import read_metrics

from .conftest import fast, synthetic_pairs, write_jsonl


def test_reward_model_separates_heldout_pairs_and_loads_in_transformers(tiny_ref, tmp_path, registry, capsys):
    from transformers import AutoModelForSequenceClassification

    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(60, "implicit"))
    res = train(RMConfig(model=tiny_ref, data=[str(data)], steps=30, lr=3e-3, eval_every=10,
                         run_dir=str(tmp_path / "r"), output_name="tiny-rm", **fast(eval_fraction=0.2)))
    evals = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if r.get("split") == "eval"]
    assert evals[-1]["accuracy"] >= 0.9 and evals[-1]["margin"] > 0, evals[-1]
    train_recs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if "split" not in r]
    assert {"accuracy", "margin", "mean_reward", "min_reward", "max_reward"} <= set(train_recs[-1])
    mv = registry.get(res.ref)
    assert mv.kind == "model" and mv.lineage.stage == "reward"
    rm = AutoModelForSequenceClassification.from_pretrained(mv.path, num_labels=1)
    assert rm.config.num_labels == 1 and rm.score.weight.shape[0] == 1
    # align score on new pairs: accuracy and the per-record scores
    held = write_jsonl(tmp_path / "held.jsonl", synthetic_pairs(80, "standard")[60:] +
                       [{"prompt": "Is red a color?", "completion": "yes 1 yes"}])
    assert main(["align", "score", "--reward-model", "tiny-rm", "--data", str(held), "--json", "--records"]) == 0
    res_json = json.loads(capsys.readouterr().out)
    s = res_json["summary"]
    assert s["pairs"] == 20 and s["records"] == 21 and s["accuracy"] >= 0.9
    assert res_json["records"][-1]["score"] > res_json["records"][0]["rejected_score"]
    # the same numbers as transformers' own forward on our rendering
    from lmsmith.align.scorers import RewardModelScorer
    from lmsmith.data.preference import PromptRow

    sc = RewardModelScorer("tiny-rm", "cpu")
    mine = sc.score([PromptRow("Is red a color?", {}, "x")], ["yes 1 yes"])[0]
    assert mine == pytest.approx(res_json["records"][-1]["score"], abs=1e-5)


def test_lora_reward_model_is_registered_merged(tiny_ref, tmp_path, registry):
    data = write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(12))
    res = train(RMConfig(model=tiny_ref, data=[str(data)], steps=2, lr=1e-3, lora_r=4,
                         run_dir=str(tmp_path / "r"), output_name="lora-rm", **fast(full=False)))
    mv = registry.get(res.ref)
    assert mv.kind == "model" and (Path(mv.path) / "config.json").exists()
    assert not (Path(mv.path) / "adapter_config.json").exists()


def test_verifiers():
    assert parse_number("so the answer is #### 1,234") == 1234
    assert parse_number("\\boxed{-3.5} and later 7") == -3.5
    assert parse_number("2 + 2 = 4") == 4
    assert exact_number([None] * 3, ["4", "it is 5", "x"], answer=["4", 4, None]) == [1.0, 0.0, None]
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    assert json_schema([None] * 3, ['{"a": 1}', '```json\n{"a": "x"}\n```', "no"], schema=[schema] * 3) == [1, 0, 0]
    tools = [{"type": "function", "function": {"name": "add", "parameters": {
        "type": "object", "properties": {"x": {"type": "number"}}, "required": ["x"]}}}]
    outs = ['<tool_call>{"name": "add", "arguments": {"x": 1}}</tool_call>',
            '<tool_call>{"name": "sub", "arguments": {"x": 1}}</tool_call>',
            '<tool_call>{"name": "add", "arguments": {"y": 1}}</tool_call>', "plain text"]
    assert tool_call([None] * 4, outs, tools=[tools] * 4) == [1.0, 0.0, 0.0, 0.0]
    assert tool_call([None], outs[:1], tools=[tools], expected=[{"name": "add", "arguments": {"x": 2}}]) == [0.0]


VERIFIER = '''
def length_score(prompts, completions, constant=None, **kw):
    return [float(c) if c is not None else float(len(t)) for t, c in zip(completions, constant)]
'''


def test_rejection_sampling_pairs_are_ordered_and_ties_counted(tiny_ref, tmp_path, monkeypatch, capsys):
    (tmp_path / "myverifiers.py").write_text(VERIFIER)
    monkeypatch.syspath_prepend(str(tmp_path))
    prompts = [{"prompt": f"Say something about number {i}.", "constant": None} for i in range(5)]
    prompts.append({"prompt": [{"role": "user", "content": "Tie please."}], "constant": 1.0})
    pf = write_jsonl(tmp_path / "prompts.jsonl", prompts)
    out = tmp_path / "pairs.jsonl"
    rc = main(["align", "sample", "--model", tiny_ref, "--prompts", str(pf), "--n", "4", "--max-tokens", "12",
               "--scorer", "verifier:myverifiers:length_score", "--output", str(out), "--seed", "3", "--json"])
    assert rc == 0
    stats = json.loads(capsys.readouterr().out)
    pairs = [json.loads(x) for x in out.read_text().splitlines()]
    assert stats["ties"] >= 1 and stats["written"] == len(pairs) >= 3
    assert stats["written"] + stats["ties"] + stats["unscored"] + stats["below_margin"] == 6
    for p in pairs:
        assert p["chosen_score"] > p["rejected_score"] and p["margin"] == p["chosen_score"] - p["rejected_score"]
        assert len(p["scores"]) == 4 and max(p["scores"]) == p["chosen_score"]
        assert len(p["chosen"]) == p["chosen_score"]  # the score is the chosen text's length
    # same seed, same file; and the output is valid DPO data
    rc = main(["align", "sample", "--model", tiny_ref, "--prompts", str(pf), "--n", "4", "--max-tokens", "12",
               "--scorer", "verifier:myverifiers:length_score", "--output", str(tmp_path / "again.jsonl"),
               "--seed", "3"])
    assert rc == 0 and (tmp_path / "again.jsonl").read_text() == out.read_text()
    from lmsmith.data.preference import read_pairs

    assert len(read_pairs(out)[0]) == len(pairs)
    best = tmp_path / "best.jsonl"
    assert main(["align", "sample", "--model", tiny_ref, "--prompts", str(pf), "--n", "4", "--max-tokens", "12",
                 "--scorer", "verifier:myverifiers:length_score", "--output", str(best), "--keep", "best"]) == 0
    rows = [json.loads(x) for x in best.read_text().splitlines()]
    assert len(rows) == 6 and all(r["messages"][-1]["role"] == "assistant" for r in rows)


def test_bad_scorer_is_one_clear_error(tiny_ref, tmp_path, capsys):
    pf = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "hi"}])
    rc = main(["align", "sample", "--model", tiny_ref, "--prompts", str(pf), "--scorer", "magic:x",
               "--output", str(tmp_path / "o.jsonl")])
    assert rc == 1 and "bad scorer 'magic:x'" in capsys.readouterr().err
    rc = main(["align", "sample", "--model", tiny_ref, "--prompts", str(pf), "--scorer", "verifier:nomod:fn",
               "--output", str(tmp_path / "o.jsonl")])
    assert rc == 1 and "cannot import verifier module 'nomod'" in capsys.readouterr().err
