"""Distillation as an objective of the one loop: the divergences, the tokenizer guard, off- and on-policy runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

CAL = Path(__file__).resolve().parents[2] / "src" / "lmsmith" / "assets" / "compress" / "en_calibration.txt"


def test_divergences():
    from lmsmith.train.distill import divergence

    a, b = torch.randn(5, 11), torch.randn(5, 11)
    for kind in ("forward", "reverse", "jsd"):
        assert torch.allclose(divergence(a, a, kind), torch.zeros(5), atol=1e-6)
        assert (divergence(a, b, kind) > 0).all()
    assert torch.allclose(divergence(a, b, "forward"), divergence(b, a, "reverse"), atol=1e-5)
    assert torch.allclose(divergence(a, b, "jsd"), divergence(b, a, "jsd"), atol=1e-5)
    assert (divergence(a * 50, b * 50, "jsd") <= math.log(2) + 1e-5).all()


@pytest.fixture
def student_ref(registry, tmp_path):
    from lmsmith.tiny import build_tiny

    return registry.register(build_tiny(tmp_path / "student", "llama", seed=1), "student").ref


def kl_to(teacher_ref: str, student_ref: str) -> float:
    from lmsmith.models import load_model, load_tokenizer
    from lmsmith.train.distill import mean_kl

    tok = load_tokenizer(teacher_ref)
    ids = torch.tensor([tok(CAL.read_text()[:2000], add_special_tokens=False).input_ids[:64]])
    return mean_kl(load_model(teacher_ref, dtype="float32", device="cpu"),
                   load_model(student_ref, dtype="float32", device="cpu"), ids)


@pytest.mark.parametrize("kd,extra", [("forward", []), ("jsd", ["--on-policy", "0.5", "--on-policy-tokens", "4"])])
def test_distill_moves_the_student_toward_the_teacher(tmp_path, tiny_ref, student_ref, registry, kd, extra):
    from lmsmith.cli import main

    data = tmp_path / "corpus.txt"
    data.write_text(CAL.read_text())
    before = kl_to(tiny_ref, student_ref)
    assert main(["train", "distill", "--teacher", tiny_ref, "--student", student_ref, "--data", str(data),
                 "--kd", kd, "--alpha", "1.0", "--seq-len", "32", "--steps", "8", "--batch-size", "4", "--lr", "3e-3",
                 "--output-name", "kd", "--no-mlflow", "--no-plot", "--device", "cpu", *extra]) == 0
    mv = registry.get("kd")
    assert mv.lineage.stage == "distill" and mv.lineage.parent == student_ref
    assert mv.lineage.config["teacher"] == tiny_ref and mv.lineage.config["kd"] == kd
    assert kl_to(tiny_ref, mv.ref) < before


def test_tokenizer_mismatch_is_one_clear_error(tmp_path, tiny_ref, registry, capsys):
    from lmsmith.cli import main
    from lmsmith.tiny import tiny_model, tiny_tokenizer

    tok = tiny_tokenizer(vocab_size=400)
    path = tmp_path / "other"
    tiny_model(vocab_size=len(tok)).save_pretrained(path)
    tok.save_pretrained(path)
    data = tmp_path / "corpus.txt"
    data.write_text(CAL.read_text())
    rc = main(["train", "distill", "--teacher", tiny_ref, "--student", str(path), "--data", str(data), "--steps", "1"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "different tokenizers" in err and "same tokenizer" in err


def test_distill_without_teacher_is_one_clear_error(tmp_path, tiny_ref, capsys):
    from lmsmith.cli import main

    data = tmp_path / "corpus.txt"
    data.write_text(CAL.read_text())
    assert main(["train", "distill", "--student", tiny_ref, "--data", str(data), "--steps", "1"]) == 1
    assert "--teacher" in capsys.readouterr().err
