"""Task files: loading, templating, few-shot sampling and every bad-input error naming file and line."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from lmsmith.errors import LmsmithError
from lmsmith.evaluate.tasks import builtin_tasks, load_task

ITEMS = [{"q": f"Kolik je {i} + 1?", "choices": [str(i), str(i + 1), str(i + 2)], "answer": 1} for i in range(12)]

TASK = """\
task: mini
kind: multiple_choice
data:
  test: items.jsonl
doc_to_text: |-
  Otázky.

  {fewshot}Otázka: {q}
  {lettered_choices}
  Odpověď:
doc_to_choice: choices
doc_to_target: answer
num_fewshot: 2
"""


def write(tmp: Path, task: str = TASK, items: list[dict] | None = None, name: str = "items.jsonl") -> Path:
    (tmp / name).write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in (ITEMS if items is None else items)))
    p = tmp / "task.yaml"
    p.write_text(task)
    return p


def test_builtin_tasks_load():
    names = builtin_tasks()
    assert {"cs_facts", "cs_answers", "cs_needle"} <= set(names)
    facts = load_task("cs_facts")
    assert len(facts.docs) >= 100 and facts.kind == "multiple_choice"
    ctx = facts.context(facts.docs[0])
    assert ctx.startswith("Následují otázky") and ctx.endswith("Odpověď:")
    assert ctx.count("Odpověď:") == facts.num_fewshot + 1
    assert "A. " in ctx and "D. " in ctx


def test_prompt_layout_and_delimiters(tmp_path):
    task = load_task(write(tmp_path))
    doc = task.docs[5]
    shots = task.shots(doc)
    ctx = task.context(doc)
    first_shot = f"Otázka: {shots[0].fields['q']}\nA. "
    assert ctx.startswith("Otázky.\n\n" + first_shot)
    # each shot is text + target_delimiter + the gold choice, followed by the few-shot delimiter
    gold = shots[0].fields["choices"][shots[0].fields["answer"]]
    assert f"Odpověď: {gold}\n\n" in ctx
    assert ctx.endswith("Otázka: Kolik je 5 + 1?\nA. 5\nB. 6\nC. 7\nOdpověď:")
    zero = load_task(write(tmp_path), num_fewshot=0).context(doc)
    assert zero == "Otázky.\n\nOtázka: Kolik je 5 + 1?\nA. 5\nB. 6\nC. 7\nOdpověď:"


def test_fewshot_seeded_and_never_the_test_item(tmp_path):
    task = load_task(write(tmp_path), num_fewshot=5)
    for doc in task.docs:
        shots = task.shots(doc)
        assert len(shots) == 5
        assert doc.index not in [s.index for s in shots]
        assert doc.fields not in [s.fields for s in shots]
        assert [s.index for s in task.shots(doc)] == [s.index for s in shots]  # same seed, same shots
    again = load_task(write(tmp_path), num_fewshot=5)
    assert [[s.index for s in again.shots(d)] for d in again.docs] == [[s.index for s in task.shots(d)] for d in task.docs]
    assert len({tuple(s.index for s in task.shots(d)) for d in task.docs}) > 1  # per-item sampling, not one fixed set


def test_fewshot_duplicate_record_is_not_a_shot(tmp_path):
    items = [ITEMS[0], ITEMS[0], ITEMS[1], ITEMS[2]]
    task = load_task(write(tmp_path, items=items), num_fewshot=2)
    shots = task.shots(task.docs[0])
    assert all(s.fields != task.docs[0].fields for s in shots)


def test_jinja_templates_like_lm_eval(tmp_path):
    t = TASK.replace("{fewshot}Otázka: {q}\n  {lettered_choices}", "{{fewshot}}Otázka: {{q}}\n  {% for c in choices %}{{c}};{% endfor %}")
    task = load_task(write(tmp_path, t), num_fewshot=0)
    assert task.context(task.docs[0]).endswith("Otázka: Kolik je 0 + 1?\n0;1;2;\nOdpověď:")


def test_target_as_letter_or_text(tmp_path):
    items = [{"q": "x", "choices": ["a", "b", "c"], "answer": "B"}, {"q": "y", "choices": ["a", "b", "c"], "answer": "c"}]
    task = load_task(write(tmp_path, items=items), num_fewshot=0)
    assert [task.target(d) for d in task.docs] == [1, 2]


def error_of(fn) -> str:
    with pytest.raises(LmsmithError) as e:
        fn()
    return str(e.value)


def test_missing_field_names_file(tmp_path):
    p = write(tmp_path, TASK.replace("doc_to_choice: choices\n", ""))
    msg = error_of(lambda: load_task(p))
    assert f"{p}:1" in msg and "missing field 'doc_to_choice'" in msg


def test_unknown_template_field_names_file_and_line(tmp_path):
    p = write(tmp_path, TASK.replace("Otázka: {q}", "Otázka: {question}"))
    msg = error_of(lambda: load_task(p))
    assert f"{p}:5:" in msg  # the line of doc_to_text
    assert "unknown field 'question'" in msg and "q" in msg


def test_unknown_key_in_task_file(tmp_path):
    p = write(tmp_path, TASK + "num_fewshots: 3\n")
    msg = error_of(lambda: load_task(p))
    assert f"{p}:14" in msg and "num_fewshots" in msg and "num_fewshot" in msg


def test_empty_data_file(tmp_path):
    p = write(tmp_path, items=[])
    msg = error_of(lambda: load_task(p))
    assert re.search(r"items\.jsonl:1: the data file is empty", msg)


def test_choice_index_out_of_range_names_data_line(tmp_path):
    items = [dict(x) for x in ITEMS]
    items[6]["answer"] = 3
    p = write(tmp_path, items=items)
    msg = error_of(lambda: load_task(p))
    assert "items.jsonl:7:" in msg and "out of range" in msg and "3 choices" in msg


def test_bad_json_line_and_missing_data_file(tmp_path):
    p = write(tmp_path)
    (tmp_path / "items.jsonl").write_text(json.dumps(ITEMS[0]) + "\n{not json\n")
    assert "items.jsonl:2: not valid JSON" in error_of(lambda: load_task(p))
    p.write_text(TASK.replace("items.jsonl", "nope.jsonl"))
    assert "does not exist" in error_of(lambda: load_task(p))


def test_unknown_task_and_metric(tmp_path):
    assert "built-in tasks" in error_of(lambda: load_task("no_such_task"))
    p = write(tmp_path, TASK + "metric_list: [bleu]\n")
    assert "unknown metric 'bleu'" in error_of(lambda: load_task(p))


def test_lm_eval_style_data_files_and_csv(tmp_path):
    rows = "q,choices,answer\n" + "\n".join(f'"{x["q"]}","{x["choices"]}",{x["answer"]}' for x in ITEMS)
    (tmp_path / "items.csv").write_text(rows + "\n")
    t = TASK.replace("data:\n  test: items.jsonl\n", "dataset_path: csv\ndataset_kwargs:\n  data_files:\n    test: items.csv\n")
    task = load_task(write(tmp_path, t), num_fewshot=0)
    assert task.choices(task.docs[0]) == ["0", "1", "2"] and task.target(task.docs[0]) == 1
