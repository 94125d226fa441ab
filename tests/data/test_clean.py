"""The cleaning pipeline on real Czech/Polish/Slovene/English/Slovak paragraphs with injected problems."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from lmsmith.cli import main
from lmsmith.data.clean import CleanConfig, clean
from lmsmith.errors import LmsmithError

from .samples import paragraphs


def _read_shards(out: Path) -> list[dict]:
    manifest = json.loads((out / "manifest.json").read_text())
    recs = []
    for s in manifest["shards"]:
        with gzip.open(out / s["path"], "rt", encoding="utf-8") as f:
            recs += [json.loads(line) for line in f]
    assert len(recs) == manifest["documents"]
    return recs


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, dict]:
    """Clean paragraphs (cs, pl, sl, en) plus 2 exact dups, 2 near dups, 2 Slovak docs, 1 junk doc, 1 PII doc."""
    cs = paragraphs("cs")
    docs = [{"text": p} for lang in ("cs", "pl", "sl", "en") for p in paragraphs(lang)]
    base = len(docs)
    # exact duplicates: same words, different case and spacing
    docs.append({"text": cs[0].upper().replace(" ", "   ")})
    docs.append({"text": "  " + cs[5] + "\n\n\n"})
    # near duplicates: two-paragraph documents, then copies with one word changed / one sentence added
    long1, long2 = cs[1] + "\n\n" + cs[2], cs[3] + "\n\n" + cs[4]
    docs.append({"text": long1})
    docs.append({"text": long2})
    docs.append({"text": long1.replace("přáteli", "kamarády")})
    docs.append({"text": long2 + " Recept mám dodnes schovaný."})
    # non-target language (Slovak, when keeping cs,pl,sl,en)
    docs += [{"text": p} for p in paragraphs("sk")]
    # low quality: a keyword list with no stop words
    docs.append({"text": " ".join(["levně", "akce", "sleva", "boty", "kabelky", "doprava", "zdarma", "výprodej"] * 5)})
    # PII in an otherwise fine Czech document
    pii_doc = (cs[6] + " Dotazy posílejte na adresu jan.novak@example.cz nebo volejte na +420 601 234 567, "
               "server běží na adrese 192.168.10.20.")
    docs.append({"text": pii_doc})
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps(d, ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")
    return path, {"total": len(docs), "clean": base + 2 + 1}


def _cfg(inp: Path, out: Path, **kw) -> CleanConfig:
    opts = {"lang": ["cs", "pl", "sl", "en"], "min_words": 20, "workers": 1, "chunk_docs": 8, "progress": False}
    return CleanConfig(inputs=[str(inp)], output=str(out), **{**opts, **kw})


def test_clean_removes_duplicates_other_languages_junk_and_pii(corpus, tmp_path):
    inp, n = corpus
    out = tmp_path / "out"
    report = clean(_cfg(inp, out))
    assert report["documents_in"] == n["total"]
    assert report["reasons"]["exact_dedup"] == {"duplicate": 2}
    assert report["reasons"]["near_dedup"] == {"near_duplicate": 2}
    assert report["near_dedup"]["clusters"] == 2
    assert report["reasons"]["langid"] == {"other_language": 2}
    assert report["reasons"]["quality"] == {"stop_words": 1}
    assert report["pii"] == {"email": 1, "phone": 1, "ip": 1}
    recs = _read_shards(out)
    assert len(recs) == n["clean"] == report["documents_out"]
    assert {r["lang"] for r in recs} == {"cs", "pl", "sl", "en"}
    text = "\n".join(r["text"] for r in recs)
    assert "jan.novak@example.cz" not in text and "601 234 567" not in text and "192.168.10.20" not in text
    assert "<EMAIL>" in text and "<PHONE>" in text and "<IP>" in text
    assert "Bratislava" not in text
    md = (out / "report.md").read_text()
    assert "langid:other_language" in md and "Bratislava" in md  # an example of what the filter removed
    assert "near_dedup:near_duplicate" in md and "kept instead" in md
    assert not (out / "_work").exists()


def test_parallel_workers_give_the_same_result(corpus, tmp_path):
    inp, _ = corpus
    one = clean(_cfg(inp, tmp_path / "one"))
    two = clean(_cfg(inp, tmp_path / "two").model_copy(update={"workers": 2}))
    assert one["steps"] == two["steps"]
    assert [r["text"] for r in _read_shards(tmp_path / "one")] == [r["text"] for r in _read_shards(tmp_path / "two")]


def test_resume_skips_finished_chunks(corpus, tmp_path):
    inp, _ = corpus
    out = tmp_path / "out"
    first = clean(_cfg(inp, out, keep_work=True))
    assert first["chunks"] >= 3 and first["chunks_resumed"] == 0
    # simulate an interruption: the last chunk never finished and no output was written yet
    work = out / "_work"
    last = sorted(work.glob("chunk-*.done.json"))[-1]
    last.unlink()
    for f in ["manifest.json", "report.json", "report.md", *[p.name for p in out.glob("shard-*")]]:
        (out / f).unlink()
    mtimes = {p.name: p.stat().st_mtime_ns for p in work.glob("chunk-*.npz")}
    second = clean(_cfg(inp, out, keep_work=True))
    assert second["chunks_resumed"] == first["chunks"] - 1 and second["chunks_processed"] == 1
    redone = [name for name, t in mtimes.items() if (work / name).stat().st_mtime_ns != t]
    assert redone == [last.name.replace(".done.json", ".npz")]
    assert second["steps"] == first["steps"]
    # other options on the same output: refuse instead of silently mixing results
    with pytest.raises(LmsmithError, match="different options"):
        clean(_cfg(inp, out, near_threshold=0.5))


def test_steps_can_be_switched_off(corpus, tmp_path):
    inp, n = corpus
    report = clean(_cfg(inp, tmp_path / "out", exact_dedup=False, near_dedup=False, quality=False, pii=False,
                        langid=False, lang=[]))
    assert report["documents_out"] == n["total"]
    assert set(report["steps"]) == {"normalize"}


def test_cli_clean_and_errors(corpus, tmp_path, capsys):
    inp, n = corpus
    out = tmp_path / "cli"
    assert main(["data", "clean", str(inp), "--output", str(out), "--lang", "cs,pl,sl,en", "--min-words", "20",
                 "--workers", "1", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["documents_out"] == n["clean"]
    assert main(["data", "clean", str(inp), "--output", str(out)]) == 1
    assert "already holds a cleaned corpus" in capsys.readouterr().err
    assert main(["data", "clean", str(tmp_path / "missing.jsonl"), "--output", str(tmp_path / "x")]) == 1
    assert "input not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"body": "no text field"}\n')
    assert main(["data", "clean", str(bad), "--output", str(tmp_path / "y"), "--workers", "1"]) == 1
    assert "no string field 'text'" in capsys.readouterr().err
    assert main(["data", "clean", str(inp), "--output", str(tmp_path / "z"), "--lang", "xx"]) == 1
    assert "unknown language" in capsys.readouterr().err


def test_txt_input_blank_line_documents(tmp_path):
    src = tmp_path / "cs.txt"
    src.write_text("\n\n".join(paragraphs("cs")[:6]) + "\n", encoding="utf-8")
    report = clean(CleanConfig(inputs=[str(src)], output=str(tmp_path / "o"), lang=["cs"], min_words=20,
                               workers=1, progress=False))
    assert report["documents_in"] == 6 and report["documents_out"] == 6


def test_short_texts_warning_and_skip_bad_lines(tmp_path, capsys):
    """The default --min-words 50 dropping most of a short-text corpus is said, with the flag to loosen;
    --skip-bad-lines skips and counts broken lines instead of stopping."""
    src = tmp_path / "short.jsonl"
    lines = [json.dumps({"text": p.split(". ")[0] + "."}) for p in paragraphs("cs")[:12]]
    lines.insert(3, '{"text": broken')
    lines.insert(5, '{"body": "no text"}')
    src.write_text("\n".join(lines) + "\n")
    assert main(["data", "clean", str(src), "--output", str(tmp_path / "a"), "--lang", "cs", "--workers", "1"]) == 1
    assert "short.jsonl:4: not valid JSON" in capsys.readouterr().err
    assert main(["data", "clean", str(src), "--output", str(tmp_path / "b"), "--lang", "cs", "--workers", "1",
                 "--skip-bad-lines"]) == 0
    err = capsys.readouterr().err
    assert "skipped 2 bad line(s)" in err and "short.jsonl:4" in err
    assert "quality removed" in err and "too_few_words" in err and "--min-words" in err
    report = json.loads((tmp_path / "b" / "report.json").read_text())
    assert report["bad_lines"] == 2 and report["documents_in"] == 12 and report["warnings"]
