"""Corpus reading, tokenization cache, packing and no-cross-document attention."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
import torch

from lmsmith.data.corpus import resolve_files, tokenize_corpus
from lmsmith.data.packing import PackedRows, collate_packed
from lmsmith.errors import LmsmithError
from lmsmith.tiny import tiny_model, tiny_tokenizer

from .samples import write_jsonl


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def test_formats_directories_and_cache(tok, tmp_path, lmsmith_home):
    d = tmp_path / "clean"
    d.mkdir()
    write_jsonl(d / "shard-000.jsonl", [{"text": "Praha je hlavní město."}, {"text": "Paris is the capital."}])
    with gzip.open(d / "shard-001.jsonl.gz", "wt") as f:
        f.write(json.dumps({"text": "Warszawa jest stolicą Polski."}) + "\n")
    (d / "manifest.json").write_text(json.dumps({"shards": [{"path": "shard-000.jsonl"}, {"path": "shard-001.jsonl.gz"}]}))
    (d / "notes.jsonl").write_text("not listed in the manifest, so never read\n")
    import zstandard

    (tmp_path / "extra.txt.zst").write_bytes(zstandard.ZstdCompressor().compress(b"one doc\n\nsecond doc\n"))
    files = resolve_files([str(d), str(tmp_path / "*.zst")])
    assert [f.name for f in files] == ["shard-000.jsonl", "shard-001.jsonl.gz", "extra.txt.zst"]
    corpus = tokenize_corpus([str(d), str(tmp_path / "*.zst")], tok, quiet=True)
    docs = ["Praha je hlavní město.", "Paris is the capital.", "Warszawa jest stolicą Polski.", "one doc", "second doc"]
    assert corpus.n_docs == 5
    expected = []
    for doc in docs:
        expected += tok(doc, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    assert corpus.tokens.tolist() == expected
    assert corpus.doc_starts.tolist()[:2] == [0, len(tok(docs[0], add_special_tokens=False)["input_ids"]) + 1]
    again = tokenize_corpus([str(d), str(tmp_path / "*.zst")], tok, quiet=True)
    assert again.dir == corpus.dir  # cached: same key, not re-tokenized
    (d / "shard-000.jsonl").write_text(json.dumps({"text": "changed"}) + "\n")
    assert tokenize_corpus([str(d)], tok, quiet=True).dir != corpus.dir


def test_parallel_tokenization_matches_serial(tok, tmp_path, monkeypatch):
    import lmsmith.data.corpus as corpus_mod

    f = write_jsonl(tmp_path / "many.jsonl", [{"text": f"document number {i} about Praha"} for i in range(600)])
    serial = tokenize_corpus([str(f)], tok, workers=1, quiet=True, cache_root=tmp_path / "a")
    monkeypatch.setattr(corpus_mod, "BATCH_DOCS", 50)
    monkeypatch.setattr(corpus_mod, "PARALLEL_MIN_BYTES", 0)
    parallel = tokenize_corpus([str(f)], tok, workers=2, quiet=True, cache_root=tmp_path / "b")
    assert np.array_equal(np.asarray(serial.tokens), np.asarray(parallel.tokens))
    assert np.array_equal(serial.doc_starts, parallel.doc_starts)


@pytest.mark.parametrize("setup,needle", [
    (lambda p: [str(p / "missing.txt")], "data file not found"),
    (lambda p: [str(p / "*.nothing")], "no files match"),
    (lambda p: [str((p / "empty.txt").write_text("\n\n") and p / "empty.txt")], "corpus is empty"),
    (lambda p: [str(write_jsonl(p / "bad.jsonl", [{"text": "ok"}, "{oops"]))], r"bad.jsonl:2: not valid JSON"),
    (lambda p: [str(write_jsonl(p / "nt.jsonl", [{"body": "x"}]))], r"nt.jsonl:1: record has no string 'text'"),
    (lambda p: [str((p / "x.csv").write_text("a") and p / "x.csv")], "unsupported data file type"),
])
def test_bad_corpora(tok, tmp_path, setup, needle):
    with pytest.raises(LmsmithError, match=needle):
        tokenize_corpus(setup(tmp_path), tok, quiet=True)


def test_skip_bad_lines_counts(tok, tmp_path):
    f = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok one"}, "{oops", {"text": "ok two"}])
    c = tokenize_corpus([str(f)], tok, skip_bad_lines=True, quiet=True)
    assert c.n_docs == 2 and c.meta["bad_lines"] == 1


def test_packing_with_eos_and_no_cross_document_attention(tok):
    docs = [tok("Praha je hlavní město České republiky.", add_special_tokens=False)["input_ids"],
            tok("Paris is the capital of France.", add_special_tokens=False)["input_ids"],
            tok("Zażółć gęślą jaźń.", add_special_tokens=False)["input_ids"]]
    stream, starts = [], []
    for d in docs:
        starts.append(len(stream))
        stream += d + [tok.eos_token_id]
    seq = len(stream) - 3  # the row ends inside the last document
    tokens, doc_starts = np.asarray(stream, dtype=np.uint16), np.asarray(starts)
    plain = PackedRows(tokens, doc_starts, seq, cross_doc_attention=True)
    isolated = PackedRows(tokens, doc_starts, seq, cross_doc_attention=False)
    assert len(plain) == 1
    row = isolated[0]
    assert row["input_ids"].tolist() == stream[:seq]
    assert row["input_ids"][starts[1] - 1] == tok.eos_token_id
    assert row["position_ids"][starts[1]] == 0 and row["position_ids"][starts[2]] == 0
    assert row["labels"][starts[1]] == -100 and row["labels"][starts[2]] == -100
    assert "position_ids" not in plain[0]

    model = tiny_model("llama")
    batch = collate_packed([row])
    with torch.no_grad():
        packed_logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                              position_ids=batch["position_ids"]).logits[0]
        alone = model(input_ids=torch.tensor([docs[1] + [tok.eos_token_id]])).logits[0]
        crossing = model(input_ids=collate_packed([plain[0]])["input_ids"]).logits[0]
    second = slice(starts[1], starts[2])
    torch.testing.assert_close(packed_logits[second], alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(crossing[second], alone, atol=1e-3)  # without the mask, attention crosses over


def test_train_eval_split_is_disjoint(tok):
    tokens = np.arange(100, dtype=np.uint16)
    rows = PackedRows(tokens, np.asarray([0]), 10)
    train, held = rows.split(2)
    assert len(train) == 8 and len(held) == 2
    assert held[0]["input_ids"][0] == 80 and train[7]["input_ids"][-1] == 79
