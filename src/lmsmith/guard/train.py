"""Train the guard classifier on the shipped dataset and pick its threshold on the validation split.

    python -m lmsmith.guard.train                    # rewrites the shipped model (src/lmsmith/assets/guard/model)
    lmsmith guard train --data-dir DIR --out DIR     # your own train.jsonl / validation.jsonl

Logistic regression (PyTorch, full batch, Adam) over hashed n-grams (an EmbeddingBag with one output) plus one
weight per rule category. The threshold is the midpoint between the highest validation benign score that
must stay below it (so that at most `target_fpr` of the validation benign texts are flagged) and the next
higher attack score: the widest margin that keeps the stated false-positive rate on validation.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from lmsmith.errors import LmsmithError
from lmsmith.guard.features import featurize
from lmsmith.guard.model import DEFAULT_DIR, GuardModel
from lmsmith.guard.rules import CATEGORIES, normalize, strip_control_tokens
from lmsmith.guard.scan import Guard, read_records

DATA_DIR = Path(__file__).resolve().parents[1] / "assets" / "guard" / "data"


@dataclass
class TrainConfig:
    data_dir: Path = DATA_DIR
    out: Path = DEFAULT_DIR
    dim: int = 1 << 17
    steps: int = 300
    lr: float = 0.05
    l2: float = 1e-4
    target_fpr: float = 0.01
    norm: str = "l2"
    char_range: tuple[int, int] = (2, 5)
    prefixes: tuple[int, ...] = ()
    skip: bool = False
    balance: bool = False  # weight each (language, label) group equally in the loss
    sentences: bool = True  # scan each sentence as a window too (the threshold is chosen with it)
    raw: bool = False  # n-grams of the text with its diacritics as well
    strip_controls: bool = True  # n-grams without control-token strings (their evidence is the rule weight)
    seed: int = 0


def rule_categories(guard: Guard, text: str) -> set[str]:
    """The rule categories the scanner would report for `text` (encoded payloads and control tokens included)."""
    return set(guard.scan(text).reasons) & set(CATEGORIES)


def choose_threshold(scores: np.ndarray, labels: np.ndarray, target_fpr: float) -> float:
    neg = np.sort(scores[labels == 0])[::-1]
    pos = scores[labels == 1]
    if not len(neg) or not len(pos):
        raise LmsmithError("the validation split needs both attacks and benign texts", "label some of each")
    k = int(np.floor(target_fpr * len(neg)))  # benign texts allowed above the threshold
    if k >= len(neg):
        return float(neg[-1])
    floor_ = float(neg[k])  # this benign score must not be flagged
    above = pos[pos > floor_]
    ceil_ = float(above.min()) if len(above) else min(1.0, floor_ + 1e-3)
    return float(np.nextafter(floor_, 1.0)) if ceil_ <= floor_ else (floor_ + ceil_) / 2


def train(cfg: TrainConfig, progress: bool = True) -> tuple[GuardModel, dict]:
    from lmsmith.guard.evaluate import binary_metrics
    from lmsmith.progress import task

    tr = read_records(Path(cfg.data_dir) / "train.jsonl", need_label=True)
    va = read_records(Path(cfg.data_dir) / "validation.jsonl", need_label=True)
    probe = Guard(GuardModel(np.zeros(cfg.dim, np.float32), {}, -30.0, threshold=1.0))  # rules only: prob ~0
    idx, val, offsets, rules = [], [], [], np.zeros((len(tr), len(CATEGORIES)), np.float32)
    n = 0
    with task("featurize", len(tr)) if progress else _null() as bar:
        for i, r in enumerate(tr):
            text = strip_control_tokens(r["text"]) if cfg.strip_controls else r["text"]
            fi, fv = featurize(normalize(text), cfg.dim, cfg.char_range, cfg.norm, cfg.prefixes, cfg.skip,
                               text if cfg.raw else None)
            offsets.append(n)
            idx.append(fi)
            val.append(fv)
            n += len(fi)
            for c in rule_categories(probe, r["text"]):
                rules[i, CATEGORIES.index(c)] = 1.0
            bar(1)
    y = np.array([r["label"] for r in tr], dtype=np.float32)
    sw = group_weights([(r.get("lang"), r["label"]) for r in tr]) if cfg.balance else None
    X_idx, X_val = np.concatenate(idx), np.concatenate(val)
    doc = np.repeat(np.arange(len(tr)), [len(i) for i in idx])
    w, rw, b = fit_logistic(X_idx, X_val, doc, rules, y, cfg, sample_weight=sw, bar_factory=(lambda: task("train", cfg.steps))
                            if progress else _null)
    model = GuardModel(w, dict(zip(CATEGORIES, map(float, rw))), float(b), char_range=cfg.char_range, norm=cfg.norm,
                       prefixes=tuple(cfg.prefixes), skip=cfg.skip, raw=cfg.raw)
    model.meta = {"ngrams_without_control_tokens": cfg.strip_controls}
    scorer = Guard(model, threshold=1.0, sentences=cfg.sentences)
    scores = np.array([scorer.scan(r["text"]).score for r in va])
    labels = np.array([r["label"] for r in va])
    model.threshold = choose_threshold(scores, labels, cfg.target_fpr)
    # the stated operating points (validation FPR <= 1% and <= 5%), selectable with `--fpr`
    points = {f"{f:g}": choose_threshold(scores, labels, f) for f in sorted({0.01, 0.05, cfg.target_fpr})}
    m = binary_metrics(scores, labels, model.threshold)
    model.meta = {
        "target_fpr": cfg.target_fpr,
        "operating_points": {k: {"threshold": t, **{m: binary_metrics(scores, labels, t)[m] for m in ("tpr", "fpr")}}
                             for k, t in points.items()},
        "validation": {k: m[k] for k in ("n_pos", "n_neg", "auc", "tpr", "fpr")},
        "sentences": cfg.sentences, "balance": cfg.balance, "ngrams_without_control_tokens": cfg.strip_controls,
        "train_examples": len(tr), "steps": cfg.steps, "lr": cfg.lr, "l2": cfg.l2, "seed": cfg.seed,
        "data_sha256": _sha(Path(cfg.data_dir) / "train.jsonl", Path(cfg.data_dir) / "validation.jsonl"),
        "trained": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
    }
    model.save(cfg.out)
    return model, model.meta


def group_weights(groups: list) -> np.ndarray:
    """Per-example loss weights (mean 1) that give every group, e.g. (language, label), the same total weight."""
    keys = sorted(set(groups), key=str)
    counts = {k: sum(g == k for g in groups) for k in keys}
    w = np.array([len(groups) / (len(keys) * counts[g]) for g in groups], dtype=np.float64)
    return w


def fit_logistic(idx: np.ndarray, val: np.ndarray, doc: np.ndarray, rules: np.ndarray, y: np.ndarray,
                 cfg: TrainConfig, bar_factory=None, sample_weight: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Full-batch Adam on the L2-regularized logistic loss; sparse features as (index, value, document) triples."""
    n = len(y)
    w = np.zeros(cfg.dim, np.float64)
    rw = np.zeros(rules.shape[1], np.float64)
    b = 0.0
    params = [w, rw, np.zeros(1)]
    m = [np.zeros_like(p) for p in params]
    v = [np.zeros_like(p) for p in params]
    b1, b2, eps = 0.9, 0.999, 1e-8
    with (bar_factory or _null)() as bar:
        for t in range(1, cfg.steps + 1):
            logit = np.bincount(doc, weights=w[idx] * val, minlength=n) + rules @ rw + b
            p = 1.0 / (1.0 + np.exp(-np.clip(logit, -60, 60)))
            g = (p - y) / n  # d loss / d logit
            if sample_weight is not None:
                g = g * sample_weight
            grads = [np.bincount(idx, weights=g[doc] * val, minlength=cfg.dim) + 2 * cfg.l2 * w,
                     rules.T @ g + 2 * cfg.l2 * rw, np.array([g.sum()])]
            for k, (par, gr) in enumerate(zip(params, grads)):
                m[k] = b1 * m[k] + (1 - b1) * gr
                v[k] = b2 * v[k] + (1 - b2) * gr * gr
                par -= cfg.lr * (m[k] / (1 - b1 ** t)) / (np.sqrt(v[k] / (1 - b2 ** t)) + eps)
            b = float(params[2][0])
            if t % 25 == 0 or t == cfg.steps:
                loss = -np.mean(y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))
                bar(25 if t % 25 == 0 else t % 25, info=f"loss {loss:.4f}")
    return w.astype(np.float32), rw.astype(np.float32), b


def _sha(*paths: Path) -> str:
    h = hashlib.sha256()
    for p in paths:
        h.update(p.read_bytes())
    return h.hexdigest()[:16]


class _null:
    def __enter__(self):
        return lambda *a, **k: None

    def __exit__(self, *exc):
        return False


def feature_options(args: Any) -> dict:
    """TrainConfig fields of the feature flags (`--char-range 3-6 --prefixes 4,6 --skip-bigrams --raw`)."""
    try:
        lo, hi = (int(x) for x in args.char_range.split("-"))
        prefixes = tuple(int(x) for x in args.prefixes.split(",") if x.strip()) if args.prefixes else ()
    except ValueError:
        raise LmsmithError(f"bad --char-range {args.char_range!r} or --prefixes {args.prefixes!r}",
                           "e.g. --char-range 2-5 --prefixes 4,6") from None
    if not 1 <= lo <= hi <= 8:
        raise LmsmithError(f"--char-range {args.char_range} is not LO-HI with 1 <= LO <= HI <= 8", "e.g. 2-5")
    return {"char_range": (lo, hi), "prefixes": prefixes, "skip": args.skip_bigrams, "raw": args.raw}


def add_feature_args(p: Any) -> None:
    p.add_argument("--char-range", default="2-5", help="character n-gram lengths LO-HI (default 2-5)")
    p.add_argument("--prefixes", default="", help="word-prefix stem lengths, e.g. 4,6 (default: none)")
    p.add_argument("--skip-bigrams", action="store_true", help="also word skip-bigrams (word i with word i+2)")
    p.add_argument("--raw", action="store_true", help="also n-grams of the text with its diacritics")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m lmsmith.guard.train", description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=DATA_DIR)
    p.add_argument("--out", type=Path, default=DEFAULT_DIR)
    p.add_argument("--target-fpr", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=300)
    add_feature_args(p)
    a = p.parse_args(argv)
    _, meta = train(TrainConfig(data_dir=a.data_dir, out=a.out, target_fpr=a.target_fpr, steps=a.steps,
                                **feature_options(a)))
    print(json.dumps(meta, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
