"""Reading documents and chunking them on sentence boundaries."""

from __future__ import annotations

import pytest

from lmsmith.errors import LmsmithError
from lmsmith.rag.docs import chunk_text, read_documents, split_sentences


def words(s: str) -> int:
    return len(s.split())


def test_sentences_keep_the_text():
    text = "First one. Second one! Third? «Quoted.» Last\n\nNew paragraph"
    parts = split_sentences(text)
    assert "".join(parts) == text
    assert len(parts) == 6


def test_chunks_respect_size_and_sentence_boundaries():
    sents = [f"Sentence number {i} has six words." for i in range(40)]  # 6 words each
    chunks = chunk_text(" ".join(sents), words, chunk_tokens=30, overlap=0)
    assert all(words(c) <= 30 for c in chunks)
    assert all(c.endswith(".") for c in chunks)  # never cut inside a sentence
    assert " ".join(chunks) == " ".join(sents)  # no overlap: the chunks are the text, in order
    assert len(chunks) == 8


def test_overlap_repeats_whole_trailing_sentences():
    sents = [f"Sentence number {i} has six words." for i in range(20)]
    chunks = chunk_text(" ".join(sents), words, chunk_tokens=30, overlap=12)
    assert all(words(c) <= 30 for c in chunks)
    for a, b in zip(chunks, chunks[1:]):
        tail = a.split(". ")[-2:]  # the last two sentences (12 words) start the next chunk
        assert b.startswith(tail[0].rstrip(".")), (a, b)
    covered = set()
    for c in chunks:
        covered |= {s for s in sents if s in c}
    assert covered == set(sents)


def test_long_sentence_is_split_by_tokens():
    long = " ".join(["word"] * 100) + "."
    chunks = chunk_text(long, words, chunk_tokens=30, overlap=5,
                        split_long=lambda s, n: [" ".join(s.split()[i:i + n]) for i in range(0, len(s.split()), n)])
    assert len(chunks) >= 4 and all(words(c) <= 30 for c in chunks)


def test_bad_chunk_settings():
    with pytest.raises(LmsmithError, match="overlap"):
        chunk_text("a. b.", words, chunk_tokens=16, overlap=16)


def test_reads_jsonl_txt_md_directories(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"id": "x", "text": "Hello.", "lang": "en"}\n{"text": "No id."}\n')
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.md").write_text("# Title here\n\nBody text.")
    (tmp_path / "c.txt").write_text("Plain text.")
    (tmp_path / "ignored.csv").write_text("a,b")
    docs, files = read_documents(tmp_path)
    by_id = {d.id: d for d in docs}
    assert set(by_id) == {"x", "a.jsonl:2", "sub/b.md", "c.txt"}
    assert by_id["x"].metadata == {"lang": "en", "source": "a.jsonl"}
    assert by_id["sub/b.md"].metadata["title"] == "Title here"
    assert len(files) == 3
    assert by_id["x"].hash != by_id["c.txt"].hash


@pytest.mark.parametrize("content,match", [
    ("", "is empty"),
    ("  \n", "is empty"),
    ('{"id": 1, "body": "no text"}\n', "has no 'text' field"),
    ('{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', "appears twice"),
    ("not json\n", "not valid JSON"),
])
def test_bad_documents_get_one_clear_error(tmp_path, content, match):
    f = tmp_path / "d.jsonl"
    f.write_text(content)
    with pytest.raises(LmsmithError, match=match):
        read_documents(f)


def test_missing_and_unsupported_paths(tmp_path):
    with pytest.raises(LmsmithError, match="no such file"):
        read_documents(tmp_path / "nope")
    (tmp_path / "x.pdf").write_text("%PDF")
    with pytest.raises(LmsmithError, match="cannot index"):
        read_documents(tmp_path / "x.pdf")
