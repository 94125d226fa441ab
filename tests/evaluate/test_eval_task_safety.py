"""A task file is data: its templates cannot run code or reach Python internals (issue 15, item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmsmith.errors import LmsmithError
from lmsmith.evaluate.tasks import load_task, render

ITEMS = [{"q": "Kolik je 1 + 1?", "choices": ["1", "2", "3"], "answer": 1}]


def task_file(tmp: Path, doc_to_text: str) -> Path:
    (tmp / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in ITEMS))
    p = tmp / "evil.yaml"
    p.write_text("task: evil\nkind: multiple_choice\ndata:\n  test: items.jsonl\n"
                 f"doc_to_text: {json.dumps(doc_to_text)}\ndoc_to_choice: choices\ndoc_to_target: answer\n")
    return p


def test_jinja_cannot_run_a_shell_command(tmp_path):
    marker = tmp_path / "pwned"
    payload = ("{% for c in ''.__class__.__mro__[1].__subclasses__() %}{% if c.__name__ == 'Popen' %}"
               f"{{{{ c(['touch', '{marker}']).wait() }}}}{{% endif %}}{{% endfor %}}{{{{ q }}}}")
    task = load_task(task_file(tmp_path, payload), num_fewshot=0)
    with pytest.raises(LmsmithError, match="doc_to_text"):
        task.context(task.docs[0])
    assert not marker.exists()


def test_jinja_globals_and_attributes_are_out_of_reach():
    with pytest.raises(Exception):  # noqa: B017  (the sandbox raises SecurityError or UndefinedError)
        render("{{ cycler.__init__.__globals__.os.getcwd() }}", {})
    with pytest.raises(Exception):  # noqa: B017  (the sandbox raises SecurityError or UndefinedError)
        render("{{ q.__class__.__mro__ }}", {"q": "x"})
    assert render("{{ q | upper }} {{ choices[1] }}", {"q": "x", "choices": ["a", "b"]}) == "X b"


def test_format_fields_allow_names_and_items_only(tmp_path):
    assert render("{q} {choices[1]} {d[k]} {n:>3}", {"q": "x", "choices": ["a", "b"], "d": {"k": "v"}, "n": 7}) == "x b v   7"
    with pytest.raises(ValueError, match="attribute access"):
        render("{q.__class__}", {"q": "x"})
    task = load_task(task_file(tmp_path, "{q.__class__.__init__.__globals__}"), num_fewshot=0)
    with pytest.raises(LmsmithError, match="attribute access"):
        task.context(task.docs[0])
