"""Drift detection: no false alarm on same-distribution splits (seeds), language and domain shifts found."""

from __future__ import annotations

import json
import random
import time
import zlib
from pathlib import Path

import numpy as np
import pytest

from lmsmith.cli import main
from lmsmith.errors import LmsmithError
from lmsmith.ops.monitor.drift import DriftConfig, drift_report, ks_2samp, psi
from lmsmith.serve.request_log import RequestLog, RequestLogConfig

TRAFFIC = Path(__file__).resolve().parents[2] / "src" / "lmsmith" / "assets" / "monitor" / "traffic.jsonl"


@pytest.fixture(scope="module")
def traffic() -> list[dict]:
    return [json.loads(line) for line in TRAFFIC.read_text(encoding="utf-8").splitlines()]


def ngram_embed(texts: list[str], dim: int = 256) -> np.ndarray:
    """A cheap content embedding for many-seed tests: hashed character trigrams, L2-normalized."""
    out = np.zeros((len(texts), dim))
    for i, t in enumerate(texts):
        t = f"  {t.lower()} "
        for j in range(len(t) - 2):
            out[i, zlib.crc32(t[j:j + 3].encode()) % dim] += 1
    return out / np.linalg.norm(out, axis=1, keepdims=True)


def pick(rows, **where) -> list[str]:
    return [r["text"] for r in rows if all(r[k] == v for k, v in where.items())]


def test_same_distribution_no_drift_in_95_percent_of_seeds(traffic):
    pool = [r["text"] for r in traffic]
    alarms, pvals = 0, []
    for seed in range(20):
        texts = random.Random(seed).sample(pool, 300)
        rep = drift_report(texts[:150], texts[150:], DriftConfig(seed=seed), embed=ngram_embed)
        alarms += rep["drift"]
        pvals.append(rep["signals"]["mmd"]["p_value"])
        assert set(rep["signals"]) == {"unseen_tokens", "vocabulary", "length", "language", "domain_classifier", "mmd"}
    assert alarms <= 1, f"{alarms} false alarms in 20 same-distribution splits"
    assert min(pvals) < 0.5 < max(pvals)  # p-values spread over (0, 1) under the null, not stuck at 1


def test_language_shift_is_drift(traffic):
    rng = random.Random(0)
    en, cs, pl = pick(traffic, lang="en"), pick(traffic, lang="cs"), pick(traffic, lang="pl")
    rep = drift_report(rng.sample(en, 150), rng.sample(cs, 150), embed=ngram_embed)
    assert rep["drift"]
    s = rep["signals"]
    assert s["language"]["drift"] and s["language"]["reference"] == {"en": 1.0} and s["language"]["current"]["cs"] > 0.9
    assert s["unseen_tokens"]["drift"] and s["unseen_tokens"]["share"] > 0.5
    assert s["domain_classifier"]["drift"] and s["domain_classifier"]["roc_auc"] > 0.9
    new_tokens = [t for t, _ in s["unseen_tokens"]["top_new_tokens"]]
    assert {"je", "mám"} & set(new_tokens)
    # a partial shift: a third of the current traffic switches to Polish
    mixed = rng.sample(en, 100) + rng.sample(pl, 50)
    rep = drift_report(rng.sample(en, 150), mixed, embed=ngram_embed)
    assert rep["drift"] and rep["signals"]["language"]["drift"]


def test_domain_shift_is_drift(traffic):
    rng = random.Random(1)
    shop, health = pick(traffic, lang="en", domain="shop"), pick(traffic, lang="en", domain="health")
    rep = drift_report(rng.sample(shop, 120), rng.sample(health, 120), embed=ngram_embed)
    assert rep["drift"] and not rep["signals"]["language"]["drift"]  # same language, another domain
    assert rep["signals"]["domain_classifier"]["drift"] and rep["signals"]["mmd"]["drift"]
    assert rep["signals"]["unseen_tokens"]["drift"]


def test_without_embedder_the_text_signals_still_work(traffic):
    rng = random.Random(2)
    rep = drift_report(rng.sample(pick(traffic, lang="en"), 100), rng.sample(pick(traffic, lang="pl"), 100))
    assert rep["drift"] and "mmd" not in rep["signals"] and rep["notes"]


def test_statistics_match_scipy():
    scipy_stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.poisson(20, 300).astype(float), rng.poisson(22, 200).astype(float)
    d, p = ks_2samp(a, b)
    ref = scipy_stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic) and p == pytest.approx(ref.pvalue, rel=0.15, abs=1e-3)
    assert psi(a, a) == pytest.approx(0.0) and psi(a, b) > 0.05


def _log(dirpath: Path, texts: list[str], ts0: float) -> None:
    rl = RequestLog(RequestLogConfig(str(dirpath))).start()
    for i, t in enumerate(texts):
        rl.log({"ts": ts0 + i, "endpoint": "chat", "status": 200, "version": "1", "prompt": t, "completion": "ok"})
    rl.close()


def test_cli_on_a_request_log_window(traffic, tmp_path, capsys):
    rng = random.Random(3)
    t0 = time.time() - 10_000
    _log(tmp_path / "log", rng.sample(pick(traffic, lang="en"), 80) + rng.sample(pick(traffic, lang="cs"), 80), t0)
    html = tmp_path / "drift.html"
    code = main(["monitor", "drift", "--reference", str(tmp_path / "log"), "--reference-until", str(t0 + 80),
                 "--current", str(tmp_path / "log"), "--since", str(t0 + 80), "--embedder", "none", "--json",
                 "--html", str(html)])
    assert code == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["drift"] is True and rep["reference"]["texts"] == 80 and rep["current"]["texts"] == 80
    assert rep["signals"]["language"]["drift"]
    page = html.read_text()
    assert page.count("data:image/png;base64,") >= 3 and "Drift detected" in page
    # the same window on both sides: no drift
    code = main(["monitor", "drift", "--reference", str(tmp_path / "log"), "--current", str(tmp_path / "log"),
                 "--until", str(t0 + 80), "--embedder", "none", "--json", "--fail-on-drift"])
    assert code == 0 and json.loads(capsys.readouterr().out)["drift"] is False
    # thresholds and signals from a YAML file, flags win
    (tmp_path / "drift.yaml").write_text("signals: [language, length]\nembedder: none\nalpha: 0.2\n")
    code = main(["monitor", "drift", "--reference", str(tmp_path / "log"), "--reference-until", str(t0 + 80),
                 "--current", str(tmp_path / "log"), "--since", str(t0 + 80), "--config", str(tmp_path / "drift.yaml"),
                 "--alpha", "0.1", "--json"])
    rep = json.loads(capsys.readouterr().out)
    assert code == 0 and set(rep["signals"]) == {"language", "length"} and rep["config"]["alpha"] == 0.1
    assert rep["config"]["alpha_per_signal"] == pytest.approx(0.05)


def test_bad_inputs(tmp_path, capsys):
    f = tmp_path / "few.jsonl"
    f.write_text('{"text": "a"}\n' * 3)
    with pytest.raises(LmsmithError, match="at least 10"):
        drift_report(["a"] * 3, ["b"] * 30)
    with pytest.raises(LmsmithError, match="--permutations 120"):  # 0.05 over 6 signals needs p < 0.0083
        drift_report(["a b"] * 30, ["b c"] * 30, DriftConfig(permutations=50), embed=ngram_embed)
    assert main(["monitor", "drift", "--reference", str(f), "--current", str(tmp_path / "missing.jsonl"),
                 "--embedder", "none"]) == 1
    assert "not found" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{oops\n")
    assert main(["monitor", "drift", "--reference", str(bad), "--current", str(f), "--embedder", "none"]) == 1
    assert "not valid JSON" in capsys.readouterr().err


@pytest.mark.slow
def test_default_embedder_language_and_null(traffic):
    from lmsmith.ops.monitor.embed import get_embedder

    embed = get_embedder("all-MiniLM-L6-v2")
    v = embed(["Where is my order?", "Kde je moje objednávka?"])
    assert v.shape == (2, 384) and np.allclose(np.linalg.norm(v, axis=1), 1, atol=1e-5)
    rng = random.Random(4)
    en = pick(traffic, lang="en")
    sample = rng.sample(en, 200)
    rep = drift_report(sample[:100], sample[100:], DriftConfig(seed=4), embed=embed)
    assert not rep["drift"], rep["drifted_signals"]
    rep = drift_report(sample[:100], rng.sample(pick(traffic, lang="en", domain="code"), 100), embed=embed)
    assert rep["signals"]["domain_classifier"]["drift"] and rep["signals"]["mmd"]["drift"]
