"""Unit behaviour of the per-document steps: normalization, PII, quality rules, language ID, MinHash."""

from __future__ import annotations

import numpy as np

from lmsmith.data.dedup import MinHasher, NearDedup, jaccard_estimate, optimal_bands
from lmsmith.data.langid import detect
from lmsmith.data.normalize import normalize_text, text_hash
from lmsmith.data.pii import scrub_pii
from lmsmith.data.quality import QualityConfig, quality_reason

from .samples import paragraphs


def test_normalize_fixes_unicode_and_whitespace():
    decomposed = "Pr\u0306\u030cí\u200bliš  žluťoučký\t kůň\r\n\r\n\r\n\r\núpěl\u00a0ódy  "
    out = normalize_text(decomposed)
    assert "\u200b" not in out and "\r" not in out and "\n\n\n" not in out and "  " not in out
    assert normalize_text("Čeština") == normalize_text("C\u030ceština")  # NFC composes
    assert text_hash("Ahoj, světe!") == text_hash("AHOJ   světe")


def test_pii_replacements_are_counted():
    text, counts = scrub_pii("Pište na jan.novak@firma.cz, volejte +420 601 234 567 nebo (555) 123-4567; "
                             "servery 10.0.0.1 a 2001:db8::8a2e:370:7334.")
    assert counts == {"email": 1, "phone": 2, "ip": 2}
    assert "firma.cz" not in text and "10.0.0.1" not in text and "2001:db8" not in text
    # numbers that are not phones or IPs stay
    keep = "Praha má 1 300 000 obyvatel, rok 2024, verze 1.2.3, 10:30 ráno, 999.1.1.1."
    assert scrub_pii(keep) == (keep, {})


def test_quality_rules_on_real_and_junk_text():
    cfg = QualityConfig(min_words=20)
    for lang in ("cs", "pl", "sl", "en", "sk"):
        for p in paragraphs(lang):
            assert quality_reason(p, lang, cfg) is None, (lang, p[:40])
    assert quality_reason("krátký text", "cs", cfg) == "too_few_words"
    assert quality_reason(" ".join(["sleva", "akce", "boty", "zdarma"] * 10), "cs", cfg) == "stop_words"
    bullets = "\n".join(f"- položka číslo {i} je v akci a na skladě" for i in range(12))
    assert quality_reason(bullets, "cs", cfg) == "bullet_lines"
    repeated = "\n".join([paragraphs("cs")[0]] * 4)
    assert quality_reason(repeated, "cs", cfg) in {"dup_lines", "dup_line_chars"}
    assert quality_reason("# # # # " * 10 + paragraphs("en")[0], "en", cfg) == "symbol_word_ratio"


def test_langid_on_real_paragraphs():
    for lang in ("cs", "pl", "sl", "en", "sk"):
        for p in paragraphs(lang):
            got, prob = detect(p)
            assert got == lang and prob > 0.9, (lang, got, prob)
    assert detect("")[0] == "und"


def test_minhash_estimates_jaccard_and_lsh_finds_near_duplicates():
    cs = paragraphs("cs")
    h = MinHasher(num_perm=128)
    a = cs[1] + " " + cs[2]
    near = a.replace("přáteli", "kamarády")
    assert jaccard_estimate(h.signature(a), h.signature(near)) > 0.8
    assert jaccard_estimate(h.signature(cs[1]), h.signature(cs[2])) < 0.1
    bands, rows = optimal_bands(0.8, 128)
    assert bands * rows == 128 and bands > 1
    index = NearDedup(0.8, 128)
    sigs = [h.signature(t) for t in (a, cs[3], near, cs[4])]
    assert [index.add(i, s) for i, s in enumerate(sigs)] == [None, None, 0, None]
    assert index.clusters == {0: [2]}


def test_near_dedup_signatures_on_disk(tmp_path):
    h = MinHasher(num_perm=64)
    index = NearDedup(0.8, 64, sig_store=tmp_path / "sigs.npy", capacity=2)
    texts = [p for p in paragraphs("cs")][:10]
    for i, t in enumerate(texts + [texts[3]]):  # grows past the capacity; the repeat is found
        twin = index.add(i, h.signature(t))
    assert twin == 3
    assert np.load(tmp_path / "sigs.npy", mmap_mode="r").shape[0] >= 10


def test_bucket_replay_decides_exactly_as_the_streaming_index():
    """Shared buckets computed band by band over the whole corpus (what Ray workers do) and replayed in
    corpus order keep and drop exactly the documents the one-process streaming index does."""
    import numpy as np

    from lmsmith.data.dedup import BucketReplay, NearDedup, band_keys, shared_buckets

    rng = np.random.default_rng(0)
    base = rng.integers(0, 2**32, size=(60, 128), dtype=np.uint32)
    sigs = []
    for _ in range(600):  # clusters of near copies (a varying share of positions changed) and unique documents
        s = base[rng.integers(len(base))].copy() if rng.random() < 0.7 else rng.integers(0, 2**32, 128, dtype=np.uint32)
        flip = rng.random(128) < rng.uniform(0.0, 0.45)
        s[flip] = rng.integers(0, 2**32, int(flip.sum()), dtype=np.uint32)
        sigs.append(s)
    sigs = np.stack(sigs)
    local = NearDedup(0.7, 128)
    keys = band_keys(sigs, local.bands, local.rows)
    # two "chunks", bucketed per band over both (the distributed step), then replayed
    buckets = [shared_buckets(keys[:, b]) for b in range(local.bands)]
    replay = BucketReplay(0.7, buckets, local.rows)
    a = [local.add(i, sigs[i]) for i in range(len(sigs))]
    b = [replay.add(i, sigs[i], keys[i].tolist()) for i in range(len(sigs))]
    assert a == b and sum(x is not None for x in a) > 100 and sum(x is None for x in a) > 60
    assert local.clusters == replay.clusters
    assert len(replay.sigs) < len(sigs)  # only kept documents in shared buckets keep a signature
    # keys are the same in another process with another hash seed (workers on other machines agree)
    import os
    import subprocess
    import sys

    code = ("import numpy as np; from lmsmith.data.dedup import band_keys; "
            "print(band_keys(np.arange(128, dtype=np.uint32)[None], 16, 8).tolist())")
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**os.environ, "PYTHONHASHSEED": "12345"}).stdout
    assert other.strip() == str(band_keys(np.arange(128, dtype=np.uint32)[None], 16, 8).tolist())
