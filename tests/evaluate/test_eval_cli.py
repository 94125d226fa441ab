"""`lmsmith eval` end to end on the tiny model: run dir, registry metrics, re-run determinism, compare, needle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmsmith.cli import main
from lmsmith.evaluate.backends import ModelInfo
from lmsmith.evaluate.needle import build_haystack

MC_TASK = """\
task: mini_mc
kind: multiple_choice
data: {test: mc.jsonl}
doc_to_text: "Otázka: {q}\\nOdpověď:"
doc_to_choice: choices
doc_to_target: answer
"""
GEN_TASK = """\
task: mini_gen
kind: generation
data: {test: gen.jsonl}
doc_to_text: "Otázka: {q}\\nOdpověď:"
doc_to_target: a
generation_kwargs: {until: ["\\n"], max_gen_toks: 4}
metric_list: [exact_match, rouge_l]
"""


@pytest.fixture
def tasks(tmp_path: Path) -> str:
    mc = [{"q": f"{i} + 1 = ?", "choices": [str(i), str(i + 1), "x"], "answer": 1} for i in range(6)]
    gen = [{"q": f"{i} + 1 = ?", "a": str(i + 1)} for i in range(3)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(x) + "\n" for x in mc))
    (tmp_path / "gen.jsonl").write_text("".join(json.dumps(x) + "\n" for x in gen))
    (tmp_path / "mc.yaml").write_text(MC_TASK)
    (tmp_path / "gen.yaml").write_text(GEN_TASK)
    return f"{tmp_path / 'mc.yaml'},{tmp_path / 'gen.yaml'}"


def test_eval_writes_reports_attaches_scores_and_repeats(tiny_ref, registry, tasks, tmp_path, capsys):
    assert main(["eval", tiny_ref, "--tasks", tasks, "--json", "--run-dir", str(tmp_path / "r1")]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert set(scores) == {"mini_mc", "mini_gen"}
    assert 0 <= scores["mini_mc"]["acc"] <= 1 and "acc_norm_stderr" in scores["mini_mc"]
    for f in ("results.json", "report.md", "scores.png"):
        assert (tmp_path / "r1" / f).stat().st_size > 0
    results = json.loads((tmp_path / "r1" / "results.json").read_text())
    assert len(results["results"][0]["items"]) == 6 and results["registry_ref"] == "tiny@1"
    meta = registry.get("tiny").metrics
    assert meta["eval/mini_mc/acc"] == pytest.approx(scores["mini_mc"]["acc"])
    assert "eval/mini_gen/rouge_l" in meta
    # the same run again gives identical numbers
    assert main(["eval", tiny_ref, "--tasks", tasks, "--json", "--run-dir", str(tmp_path / "r2"), "--no-registry"]) == 0
    assert json.loads(capsys.readouterr().out) == scores

    # compare two earlier runs item by item
    assert main(["eval", "compare", str(tmp_path / "r1"), str(tmp_path / "r2"), "--json", "--run-dir", str(tmp_path / "cmp")]) == 0
    rows = json.loads(capsys.readouterr().out)
    acc = next(r for r in rows if r["task"] == "mini_mc" and r["metric"] == "acc")
    assert acc["delta"] == 0 and acc["p_value"] == 1.0 and acc["test"] == "mcnemar"
    assert (tmp_path / "cmp" / "compare.png").exists() and (tmp_path / "cmp" / "compare.md").exists()


def test_eval_errors_are_one_line(tiny_ref, tmp_path, capsys):
    assert main(["eval", tiny_ref, "--tasks", "nope"]) == 1
    assert "unknown task 'nope'" in capsys.readouterr().err
    assert main(["eval", tiny_ref]) == 1
    assert "--tasks is required" in capsys.readouterr().err
    assert main(["eval", "tasks"]) == 0
    assert "cs_facts" in capsys.readouterr().out


def test_needle_runs_and_reports_kv_cache(tiny_ref, tmp_path, capsys):
    (tmp_path / "filler.txt").write_text("Prší. Svítí slunce. Fouká vítr. Padá sníh. " * 3)
    (tmp_path / "needle.yaml").write_text(
        "task: n\nkind: needle\nneedle:\n  text: Heslo je 42.\n  question: 'Heslo je'\n  answer: '42'\n"
        "  filler: filler.txt\n  lengths: [32, 64, 100000]\n  depths: [0, 50, 100]\n  max_new_tokens: 3\n")
    assert main(["eval", tiny_ref, "--tasks", str(tmp_path / "needle.yaml"), "--json", "--run-dir", str(tmp_path / "r")]) == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())["results"][0]
    assert len(res["items"]) == 6 and res["extra"]["skipped_lengths"] == [100000]
    assert (tmp_path / "r" / "needle-n.png").stat().st_size > 0
    from transformers import AutoConfig

    from lmsmith.models import resolve

    c = AutoConfig.from_pretrained(resolve(tiny_ref).dir)
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    tokens = res["extra"]["max_tokens"]
    assert res["extra"]["kv_cache_bytes"] == 2 * c.num_hidden_layers * c.num_key_value_heads * head_dim * 4 * tokens


def test_haystack_depth_and_budget():
    filler = [f"Věta číslo {i}." for i in range(10)]
    count = lambda s: len(s.split())  # noqa: E731
    for depth, where in ((0, 0), (100, -1)):
        hay = build_haystack(filler, "JEHLA.", 60, depth, count)
        parts = hay.split(". ")
        assert "JEHLA" in parts[where]
    mid = build_haystack(filler, "JEHLA.", 60, 50, count)
    assert 0.35 < mid.index("JEHLA") / len(mid) < 0.65
    assert count(build_haystack(filler, "JEHLA.", 30, 50, count)) <= 30 + 1


def test_kv_cache_formula_llama70b_like():
    # the SYSTEM.md example: 80 layers, 8 KV heads x 128 dims, 2 bytes, 128k tokens ~ 42 GB
    info = ModelInfo(name="70b", layers=80, kv_heads=8, head_dim=128, dtype_bytes=2)
    assert info.kv_cache_bytes(128_000) == 2 * 80 * 8 * 128 * 2 * 128_000
    assert 41e9 < info.kv_cache_bytes(128_000) < 43e9


@pytest.mark.slow
def test_default_model_on_builtin_mc(default_model_dir, tmp_path, capsys):
    assert main(["eval", str(default_model_dir), "--tasks", "cs_facts", "--limit", "12", "--num-fewshot", "1",
                 "--json", "--run-dir", str(tmp_path / "r")]) == 0
    acc = json.loads(capsys.readouterr().out)["cs_facts"]["acc"]
    assert 0.0 <= acc <= 1.0


def test_demo_eval_step_compares_base_and_model(tiny_ref, registry, tmp_path):
    from lmsmith.demo import step_eval
    from lmsmith.tiny import build_tiny

    other = registry.register(build_tiny(tmp_path / "tiny2", "llama", seed=1), "tiny").ref
    ctx = {"base": tiny_ref, "model": other}
    step_eval(ctx)
    res = json.loads((Path(ctx["eval_run"]) / "compare.json").read_text())
    assert {r["task"] for r in res["rows"]} == {"cs_facts", "cs_answers", "cs_needle"}
    assert res["a"] == tiny_ref and res["b"] == other
    assert "eval/cs_facts/acc" in registry.get(other).metrics


def test_compare_pairs_items_and_refuses_different_settings(tiny_ref, tasks, tmp_path, capsys):
    """12 items 0-shot vs 20 items 3-shot measure different things: refused (or warned with
    --allow-mismatch); different --limit only: scores are over the shared items, with a warning."""
    mc = [{"q": f"{i} + 1 = ?", "choices": [str(i), str(i + 1), "x"], "answer": 1} for i in range(24)]
    (tmp_path / "mc.jsonl").write_text("".join(json.dumps(x) + "\n" for x in mc))
    task = str(tmp_path / "mc.yaml")
    base = ["eval", tiny_ref, "--tasks", task, "--no-registry", "--json"]
    assert main(base + ["--limit", "12", "--num-fewshot", "0", "--run-dir", str(tmp_path / "a")]) == 0
    assert main(base + ["--limit", "20", "--num-fewshot", "3", "--run-dir", str(tmp_path / "b")]) == 0
    assert main(base + ["--limit", "20", "--num-fewshot", "0", "--run-dir", str(tmp_path / "c")]) == 0
    capsys.readouterr()
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--run-dir", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "evaluated differently" in err and "num_fewshot 0 vs 3" in err and "--allow-mismatch" in err
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--allow-mismatch", "--json",
                 "--run-dir", str(tmp_path / "y")]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert all(any("num_fewshot" in w for w in r["warnings"]) for r in rows)
    assert main(["eval", "compare", str(tmp_path / "a"), str(tmp_path / "c"), "--json",
                 "--run-dir", str(tmp_path / "z")]) == 0
    rows = json.loads(capsys.readouterr().out)
    acc = next(r for r in rows if r["metric"] == "acc")
    ra, rc = (json.loads((tmp_path / d / "results.json").read_text())["results"][0] for d in "ac")
    assert acc["n"] == 12 and acc["n_a"] == 12 and acc["n_b"] == 20
    shared = {it["id"] for it in ra["items"]}
    assert acc["b"] == pytest.approx(sum(it["acc"] for it in rc["items"] if it["id"] in shared) / 12)
    assert acc["a"] == pytest.approx(ra["metrics"]["acc"])
    assert any("12 items both runs scored" in w for w in acc["warnings"])
    assert all("prompt" in it for it in ra["items"])


def test_models_show_keeps_every_eval_run_with_its_settings(tiny_ref, registry, tasks, tmp_path, capsys):
    mc = tasks.split(",")[0]
    assert main(["eval", tiny_ref, "--tasks", mc, "--limit", "3", "--run-dir", str(tmp_path / "r1")]) == 0
    assert main(["eval", tiny_ref, "--tasks", mc, "--num-fewshot", "1", "--run-dir", str(tmp_path / "r2")]) == 0
    evals = registry.get("tiny").evals
    assert [e["run_dir"] for e in evals] == [str(tmp_path / "r1"), str(tmp_path / "r2")]
    assert evals[0]["settings"]["limit"] == 3 and evals[0]["tasks"]["mini_mc"]["n"] == 3
    assert evals[1]["tasks"]["mini_mc"]["num_fewshot"] == 1 and evals[1]["tasks"]["mini_mc"]["n"] == 6
    capsys.readouterr()
    assert main(["models", "show", "tiny"]) == 0
    shown = capsys.readouterr().out
    assert "eval runs of tiny@1" in shown and str(tmp_path / "r1") in shown and str(tmp_path / "r2") in shown
