"""Tokenizer tools: fertility, training, special-token checks, and vocabulary extension (tiny models;
the real default model in the slow tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmsmith.cli import main
from lmsmith.data.special_tokens import validate_special_tokens
from lmsmith.data.tokenizer_tools import extend_model, fertility, load_any_tokenizer, train_tokenizer

from .samples import TEXTS, czech_corpus

LANGS = ("cs", "pl", "sl", "en")


def _text(lang: str) -> str:
    return (TEXTS / f"{lang}.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def cs_corpus(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "cs_corpus.txt"
    path.write_text(czech_corpus(300_000), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def czech_tokenizer(tmp_path_factory, cs_corpus) -> Path:
    return train_tokenizer([cs_corpus], tmp_path_factory.mktemp("tok") / "cs-bpe", vocab_size=2000)


def test_fertility_cli_json_table_and_plot(tiny_dir, czech_tokenizer, tmp_path, capsys):
    png = tmp_path / "fert.png"
    args = ["tokenizer", "fertility", "--tokenizer", str(tiny_dir), "--tokenizer", str(czech_tokenizer / "tokenizer.json"),
            "--plot", str(png)] + [a for lang in LANGS for a in ("--text", f"{lang}={TEXTS / (lang + '.txt')}")]
    assert main(args + ["--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 2 * len(LANGS)
    assert set(rows[0]) == {"tokenizer", "lang", "tokens_per_word", "chars_per_token", "bytes_per_token", "split3_share"}
    by = {(r["tokenizer"], r["lang"]): r for r in rows}
    # the Czech-trained tokenizer needs fewer tokens for Czech than for Polish or Slovene
    assert by[("cs-bpe", "cs")]["tokens_per_word"] < by[("cs-bpe", "pl")]["tokens_per_word"]
    assert png.stat().st_size > 5000 and png.read_bytes()[:4] == b"\x89PNG"
    assert main(args + ["--plot", ""]) == 0
    assert "tokens/word" in capsys.readouterr().out
    assert main(["tokenizer", "fertility", "--tokenizer", str(tiny_dir), "--text", "cs"]) == 1
    assert "LANG=FILE" in capsys.readouterr().err


def test_fertility_counts():
    from lmsmith.tiny import tiny_tokenizer

    tok = tiny_tokenizer()
    f = fertility(tok, "Praha je hlavní město.")
    n = len(tok.encode("Praha je hlavní město.", add_special_tokens=False))
    assert f["tokens_per_word"] == pytest.approx(n / 4)
    assert f["bytes_per_token"] == pytest.approx(len("Praha je hlavní město.".encode()) / n)
    assert 0 <= f["split3_share"] <= 1


def test_trained_tokenizer_has_single_token_specials_and_chat_template(czech_tokenizer):
    tok = load_any_tokenizer(str(czech_tokenizer))
    report = validate_special_tokens(tok, require_tools=True)
    assert report.ok, report.problems()
    assert len(tok) == 2000
    text = tok.apply_chat_template([{"role": "user", "content": "Ahoj"}], tokenize=False, add_generation_prompt=True)
    assert "<|im_start|>user\nAhoj<|im_end|>" in text
    assert tok.decode(tok.encode("Příliš žluťoučký kůň")) == "Příliš žluťoučký kůň"


def test_special_token_check_reports_problems(tmp_path, capsys):
    tok = train_tokenizer([TEXTS / "en.txt"], tmp_path / "plain", vocab_size=400, special_tokens=["<eos>"],
                          bos="", eos="<eos>", pad="")
    t = load_any_tokenizer(str(tok))
    report = validate_special_tokens(t, extra=("<|im_start|>",))
    assert not report.ok
    problems = " ".join(report.problems())
    assert "no chat template" in problems and "'<|im_start|>'" in problems and "tokens, expected 1" in problems
    assert main(["tokenizer", "check", str(tok), "--no-chat", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def _logits(ref, ids: torch.Tensor) -> torch.Tensor:
    from lmsmith.models import load_model

    with torch.no_grad():
        return load_model(ref, dtype="float32", device="cpu")(ids).logits


@pytest.mark.parametrize("arch", ["llama", "qwen2"])  # untied and tied embeddings
def test_extend_tiny_keeps_old_logits_and_tokenization(arch, tmp_path, cs_corpus, registry):
    from lmsmith.tiny import build_tiny

    src = build_tiny(tmp_path / arch, arch)
    parent = registry.register(src, "tiny").ref
    en = TEXTS / "en.txt"
    mv, stats = extend_model(parent, cs_corpus, 300, "tiny-cs", protect=en, eval_text=TEXTS / "cs_heldout.txt")
    assert mv.lineage.parent == parent and mv.lineage.stage == "extend" and mv.lineage.data[0].sha256
    assert stats["new_tokens"] == 300 and stats["vocab_after"] == stats["vocab_before"] + 300
    assert stats["eval_tokens_per_word_after"] < stats["eval_tokens_per_word_before"]
    old_tok, new_tok = load_any_tokenizer(parent), load_any_tokenizer(mv.ref)
    assert len(new_tok) == len(old_tok) + 300
    assert old_tok.get_vocab().items() <= new_tok.get_vocab().items()  # no existing id changed
    english = _text("en")
    ids = old_tok(english, return_tensors="pt").input_ids
    assert new_tok(english, return_tensors="pt").input_ids.tolist() == ids.tolist()
    old, new = _logits(parent, ids), _logits(mv.ref, ids)
    assert new.shape[-1] == old.shape[-1] + 300
    torch.testing.assert_close(new[..., : old.shape[-1]], old, atol=1e-5, rtol=0)
    czech = "Hokejisté v neděli porazili soupeře a postoupili do semifinále."
    assert len(new_tok.encode(czech)) < len(old_tok.encode(czech))
    assert new_tok.decode(new_tok.encode(czech, add_special_tokens=False)) == czech


def test_extend_mean_init_and_errors(tmp_path, tiny_ref, cs_corpus, capsys):
    assert main(["tokenizer", "extend", tiny_ref, "--corpus", str(cs_corpus), "--num-tokens", "50",
                 "--output-name", "tiny-mean", "--init", "mean", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["new_tokens"] == 50 and res["init"] == "mean"
    from lmsmith.models import load_model

    w = load_model(res["ref"], dtype="float32", device="cpu").get_input_embeddings().weight
    torch.testing.assert_close(w[-1], w[: res["vocab_before"]].mean(0))
    assert main(["tokenizer", "extend", tiny_ref, "--corpus", str(tmp_path / "none.txt"), "--num-tokens", "5",
                 "--output-name", "x"]) == 1
    assert "text file not found" in capsys.readouterr().err
    assert main(["tokenizer", "extend", "no-such-model", "--corpus", str(cs_corpus), "--num-tokens", "5",
                 "--output-name", "x"]) == 1


@pytest.mark.slow
def test_czech_trained_tokenizer_beats_default_on_czech(default_model_dir, czech_tokenizer):
    held = _text("cs_heldout")
    ours = fertility(load_any_tokenizer(str(czech_tokenizer)), held)["tokens_per_word"]
    default = fertility(load_any_tokenizer(str(default_model_dir)), held)["tokens_per_word"]
    assert ours < default


@pytest.mark.slow
def test_extend_default_model_cuts_czech_fertility_and_keeps_english_logits(default_model_dir, cs_corpus):
    mv, stats = extend_model(str(default_model_dir), cs_corpus, 1500, "smollm2-cs", protect=TEXTS / "en.txt",
                             eval_text=TEXTS / "cs_heldout.txt")
    assert stats["new_tokens"] == 1500 and stats["tied_embeddings"]
    old_tok, new_tok = load_any_tokenizer(str(default_model_dir)), load_any_tokenizer(mv.ref)
    held = _text("cs_heldout")  # never part of the training corpus
    before = fertility(old_tok, held)["tokens_per_word"]
    after = fertility(new_tok, held)["tokens_per_word"]
    assert after <= 0.8 * before, (before, after)
    english = _text("en")
    ids = old_tok(english, return_tensors="pt").input_ids
    assert new_tok(english, return_tensors="pt").input_ids.tolist() == ids.tolist()
    old, new = _logits(str(default_model_dir), ids), _logits(mv.ref, ids)
    torch.testing.assert_close(new[..., : old.shape[-1]], old, atol=1e-5, rtol=0)


def test_check_tools_says_what_is_missing_and_add_special_fixes_it(tiny_ref, capsys, monkeypatch):
    import lmsmith.data.special_tokens as ST

    monkeypatch.setattr(ST, "TOOL_TAGS", ("<tool_call>", "</tool_call>", "<|python_tag|>"))
    assert main(["tokenizer", "check", tiny_ref, "--tools"]) == 1
    text = capsys.readouterr().out
    assert "1 of 8 checks fail" in text and "<|python_tag|>" in text
    assert f"lmsmith tokenizer add-special {tiny_ref} --tokens '<|python_tag|>'" in text
    assert main(["tokenizer", "add-special", tiny_ref, "--tokens", "<|python_tag|>", "--output-name", "tiny-tools"]) == 0
    capsys.readouterr()
    assert main(["tokenizer", "check", "tiny-tools", "--tools"]) == 0
    assert "ok: all 8 checks pass" in capsys.readouterr().out
    # the old inputs give the same logits: only new rows were added
    ids = torch.tensor([[5, 6, 7, 8]])
    old, new = _logits(tiny_ref, ids), _logits("tiny-tools", ids)
    assert new.shape[-1] == old.shape[-1] + 1 and torch.allclose(old, new[..., : old.shape[-1]], atol=1e-5)
    assert main(["tokenizer", "add-special", "tiny-tools", "--tokens", "<|python_tag|>", "--output-name", "x"]) == 1
    assert "already has" in capsys.readouterr().err
