"""Benchmark the prompt-injection guard on the held-out split (templates, goals, lead-ins and documents the
classifier never saw): TPR at FPR <= 1% and <= 5%, ROC AUC, and TPR/FPR at the shipped threshold, per
language, for the combined guard and its two parts (rules only, classifier only) measured in the same run;
plus scan throughput on CPU (short texts and 1,000-word documents), wall-clock and per CPU-second.

    python -m bench.guard.guard                # writes bench/results/guard.json
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
from pathlib import Path

from bench._result import make_result, write_result
from bench.common import RESULTS
from lmsmith.guard.evaluate import evaluate
from lmsmith.guard.scan import Guard, read_records
from lmsmith.guard.train import DATA_DIR

VARIANTS = {"combined": {}, "rules_only": {"use_classifier": False}, "classifier_only": {"use_rules": False}}


def timed(fn):
    w0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w0, time.process_time() - c0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=DATA_DIR / "heldout.jsonl")
    p.add_argument("--out", type=Path, default=RESULTS / "guard.json")
    p.add_argument("--docs", type=int, default=40, help="1,000-word documents for the long-text throughput")
    a = p.parse_args(argv)
    recs = read_records(a.data, need_label=True)
    metrics: dict[str, float] = {"heldout_texts": len(recs), "heldout_attacks": sum(r["label"] for r in recs)}
    texts = [r["text"] for r in recs]
    for name, kw in VARIANTS.items():
        g = Guard(**kw)
        results, wall, cpu = timed(lambda g=g: [g.scan(t) for t in texts])
        rep = evaluate(recs, [r.score for r in results], g.threshold)
        for lang, m in [*rep["languages"].items(), ("all", rep["overall"])]:
            for k in ("auc", "tpr_at_fpr_0.01", "tpr_at_fpr_0.05", "tpr", "fpr"):
                metrics[f"{name}.{lang}.{k}"] = m[k]
        metrics[f"{name}.texts_per_s"] = round(len(texts) / wall, 1)
        metrics[f"{name}.texts_per_cpu_s"] = round(len(texts) / cpu, 1)
        if name == "combined":
            metrics["threshold"] = round(g.threshold, 4)
    # long documents: 1,000 words of held-out benign documents of one language, clean and with one held-out
    # attack inserted at 70% (the document's score is its worst window's)
    rng = random.Random(0)
    g = Guard()
    clean, dirty = [], []
    for lang in sorted({r["lang"] for r in recs}):
        docs = [r["text"] for r in recs if r["label"] == 0 and r["category"] == "docs" and r["lang"] == lang]
        attacks = [r["text"] for r in recs if r["label"] == 1 and r["lang"] == lang
                   and r["category"] in ("override", "extract", "roleplay")]
        for _ in range(a.docs // 4):
            words: list[str] = []
            while len(words) < 1000:
                words += rng.choice(docs).split()
            words = words[:1000]
            clean.append(" ".join(words))
            dirty.append(" ".join(words[:700] + [rng.choice(attacks)] + words[700:]))
    found, wall, cpu = timed(lambda: [g.scan(d).flagged for d in dirty])
    metrics["long_docs"] = len(dirty)
    metrics["long_docs_attack_found_rate"] = round(sum(found) / len(dirty), 4)
    metrics["long_docs_clean_flagged_rate"] = round(sum(g.scan(d).flagged for d in clean) / len(clean), 4)
    metrics["long_docs_per_s"] = round(len(dirty) / wall, 2)
    metrics["long_docs_per_cpu_s"] = round(len(dirty) / cpu, 2)
    metrics["load_average"] = round(os.getloadavg()[0], 1)
    result = make_result("guard", metrics, device="cpu", argv=argv, extra_versions=("numpy",),
                         data=str(a.data.name), notes="held-out split: templates/goals/lead-ins/documents disjoint "
                         "from train and validation (see src/lmsmith/assets/guard/README.md)")
    write_result(a.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
