"""What a new user meets: help texts, one-line errors, 'did you mean', bounded numbers (issue 16)."""

from __future__ import annotations

import gzip
import json

import pytest

from lmsmith.cli import main


def run(capsys, argv: list[str]) -> tuple[int, str, str]:
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors and --help
        rc = e.code
    cap = capsys.readouterr()
    return rc, cap.out, cap.err


def test_help_texts(capsys):
    rc, out, _ = run(capsys, ["data", "clean", "--help"])
    assert rc == 0 and "PydanticUndefined" not in out and "(default: )" not in out
    assert "(default: email,phone,ip)" in out
    _, out, _ = run(capsys, ["plan", "--help"])
    assert "serveing" not in out and "plan serving" in out
    rc, out, _ = run(capsys, ["eval", "tasks", "--help"])
    assert rc == 0 and "usage: lmsmith eval tasks" in out and "cs_facts" not in out


@pytest.mark.parametrize("argv, message", [
    (["eval", "m", "--tasks", "x", "--limit", "0"], "argument --limit: must be >= 1, got 0"),
    (["eval", "m", "--tasks", "x", "--limit", "-3"], "argument --limit: must be >= 1, got -3"),
    (["plan", "serve", "--model", "llama-3.2-1b", "--context", "0"], "argument --context: must be >= 1, got 0"),
    (["generate", "m", "--prompt", "x", "--top-p", "1.5"], "must be > 0 and <= 1, got 1.5"),
    (["generate", "m", "--promt", "hi"], "unrecognized arguments: --promt; did you mean '--prompt'?"),
    (["train", "pretrain", "--model", "m", "--step", "3"], "did you mean '--steps'?"),
    (["models", "lst"], "did you mean 'list'?"),
    (["eval", "m", "--tasks", "x", "--limt", "3"], "did you mean '--limit'?"),
])
def test_usage_errors_are_one_line_with_a_hint(capsys, argv, message):
    rc, _, err = run(capsys, argv)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1 and "--help" in err


def test_negative_numbers_are_values_and_pydantic_checks_them(capsys, tiny_dir, tmp_path):
    rc, _, err = run(capsys, ["train", "pretrain", "--model", str(tiny_dir), "--data", str(tmp_path), "--lr", "-1e-3"])
    assert rc == 1 and "option 'lr'" in err and "greater than 0" in err


def test_did_you_mean_for_models_tasks_and_yaml_keys(capsys, registry, tiny_dir, tmp_path):
    registry.register(tiny_dir, "smollm2-cs")
    rc, _, err = run(capsys, ["models", "list", "smollm2-c"])
    assert rc == 1 and "unknown model 'smollm2-c'; did you mean 'smollm2-cs'?" in err
    rc, _, err = run(capsys, ["models", "show", "smolm2-cs"])
    assert rc == 1 and "did you mean 'smollm2-cs'?" in err
    rc, _, err = run(capsys, ["eval", "smollm2-cs", "--tasks", "cs_fact"])
    assert rc == 1 and "did you mean 'cs_facts'?" in err
    y = tmp_path / "t.yaml"
    y.write_text("model: x\nseq_length: 8\n")
    rc, _, err = run(capsys, ["train", "pretrain", "--config", str(y)])
    assert rc == 1 and "unknown option 'seq_length' (did you mean 'seq_len'?)" in err


def test_wrong_kind_of_path_is_one_clear_error(capsys, tiny_ref, tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    rc, _, err = run(capsys, ["data", "clean", str(f), "--output", str(f)])
    assert rc == 1 and "is a file" in err
    rc, _, err = run(capsys, ["generate", tiny_ref, "--prompt", "x", "--json-schema", str(tmp_path)])
    assert rc == 1 and "is a directory" in err
    rc, _, err = run(capsys, ["tokenizer", "fertility", "--tokenizer", tiny_ref, "--text", f"cs={tmp_path}"])
    assert rc == 1 and "is a directory" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "ok"}\n{"text": broken\n')
    rc, _, err = run(capsys, ["tokenizer", "fertility", "--tokenizer", tiny_ref, "--text", f"cs={bad}"])
    assert rc == 1 and "bad.jsonl:2: not valid JSON" in err


def test_progress_total_of_compressed_files_is_their_text(tmp_path):
    from lmsmith.data.corpus import text_bytes

    text = "".join(json.dumps({"text": f"document {i} " * 20}) + "\n" for i in range(500))
    with gzip.open(tmp_path / "c.jsonl.gz", "wt") as f:
        f.write(text)
    assert text_bytes(tmp_path / "c.jsonl.gz") == len(text.encode())
    (tmp_path / "p.jsonl").write_text(text)
    assert text_bytes(tmp_path / "p.jsonl") == len(text.encode())
