"""Unmodified lm-evaluation-harness task YAMLs load and score (issue 15, item 13): every output_type,
`dataset_path: json` + `dataset_kwargs.data_files`, Jinja templates, `doc_to_choice: "{{choices}}"`,
metric_list entries with aggregation / higher_is_better, and lm-eval's bookkeeping keys."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmsmith.errors import LmsmithError
from lmsmith.evaluate.tasks import load_task

ARC_STYLE = """\
tag:
  - ai2_arc
task: arc_mini
dataset_path: json
dataset_name: null
dataset_kwargs:
  data_files:
    test: arc.jsonl
output_type: multiple_choice
test_split: test
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{choices.label.index(answerKey)}}"
doc_to_choice: "{{choices.text}}"
should_decontaminate: true
doc_to_decontamination_query: "Question: {{question}}\\nAnswer:"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""

MC_STYLE = """\
task: mc_mini
dataset_path: json
dataset_kwargs:
  data_files:
    test: mc.jsonl
output_type: multiple_choice
doc_to_text: "{{question.strip()}}\\nAnswer:"
doc_to_choice: "{{choices}}"
doc_to_target: "{{answer}}"
target_delimiter: " "
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
metadata:
  version: 2.0
"""

GEN_STYLE = """\
task: gen_mini
dataset_path: json
dataset_kwargs:
  data_files:
    test: gen.jsonl
output_type: generate_until
doc_to_text: "Question: {{question}}\\nAnswer:"
doc_to_target: "{{answer}}"
generation_kwargs:
  until:
    - "\\n\\n"
    - "Question:"
  do_sample: false
  temperature: 0.0
repeats: 1
metric_list:
  - metric: exact_match
    aggregation: mean
    higher_is_better: true
metadata:
  version: 3.0
"""

ROLLING_STYLE = """\
task: rolling_mini
dataset_path: json
dataset_kwargs:
  data_files:
    test: pages.jsonl
output_type: loglikelihood_rolling
doc_to_text: "{{page}}"
doc_to_target: "{{page}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
metadata:
  version: 1.0
"""

DATA = {
    "arc.jsonl": [{"question": "Which is a planet?", "choices": {"text": ["Sun", "Mars", "Moon"], "label": ["A", "B", "C"]},
                   "answerKey": "B"}],
    "mc.jsonl": [{"question": " Kolik je 1 + 1? ", "choices": ["1", "2", "3"], "answer": 1}],
    "gen.jsonl": [{"question": "Capital of Poland?", "answer": "Warszawa"}],
    "pages.jsonl": [{"page": "Praha je hlavní město České republiky."}],
}


def write(tmp: Path, yaml_text: str, data: str) -> Path:
    (tmp / data).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in DATA[data]))
    p = tmp / "task.yaml"
    p.write_text(yaml_text)
    return p


def test_arc_style_multiple_choice(tmp_path):
    task = load_task(write(tmp_path, ARC_STYLE, "arc.jsonl"))
    doc = task.docs[0]
    assert task.kind == "multiple_choice" and task.metrics == ["acc", "acc_norm"]
    assert task.context(doc) == "Question: Which is a planet?\nAnswer:"
    assert task.choices(doc) == ["Sun", "Mars", "Moon"] and task.target(doc) == 1


def test_choices_template_and_numeric_target(tmp_path):
    task = load_task(write(tmp_path, MC_STYLE, "mc.jsonl"))
    doc = task.docs[0]
    assert task.context(doc) == "Kolik je 1 + 1?\nAnswer:"
    assert task.choices(doc) == ["1", "2", "3"] and task.target(doc) == 1 and task.target_text(doc) == "2"


def test_generate_until(tmp_path):
    task = load_task(write(tmp_path, GEN_STYLE, "gen.jsonl"))
    assert task.kind == "generation" and task.metrics == ["exact_match"]
    assert task.generation_kwargs["until"] == ["\n\n", "Question:"]
    assert task.target(task.docs[0]) == "Warszawa"


def test_loglikelihood_rolling(tmp_path):
    task = load_task(write(tmp_path, ROLLING_STYLE, "pages.jsonl"))
    assert task.kind == "perplexity" and task.metrics == ["word_perplexity", "byte_perplexity", "bits_per_byte"]


def test_unknown_output_type_names_the_valid_ones(tmp_path):
    with pytest.raises(LmsmithError, match="unknown output_type 'multi_choice'"):
        load_task(write(tmp_path, MC_STYLE.replace("output_type: multiple_choice", "output_type: multi_choice"), "mc.jsonl"))


@pytest.mark.parametrize("yaml_text,data", [(ARC_STYLE, "arc.jsonl"), (ROLLING_STYLE, "pages.jsonl")])
def test_lm_eval_yaml_runs_with_lmsmith_eval(tmp_path, tiny_dir, capsys, yaml_text, data):
    from lmsmith.cli import main

    task = write(tmp_path, yaml_text, data)
    assert main(["eval", str(tiny_dir), "--tasks", str(task), "--json", "--run-dir", str(tmp_path / "r"),
                 "--no-registry"]) == 0
    out = json.loads(capsys.readouterr().out)
    text = json.dumps(out)
    assert ("acc_norm" in text) if "arc" in data else ("bits_per_byte" in text)
