"""`lmsmith guard eval`: how well the guard separates attacks from benign texts, overall and per language.

ROC AUC (rank statistic, ties counted half), TPR at a fixed FPR (the best TPR over thresholds whose FPR on
this data stays at or below it), and TPR/FPR at the model's own threshold; ROC curves as a PNG.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

FPRS = (0.01, 0.05)


def roc_curve(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds), thresholds descending; a text is flagged when score >= threshold."""
    order = np.argsort(-scores, kind="stable")
    s, y = scores[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tp = np.cumsum(y)[distinct]
    fp = np.cumsum(1 - y)[distinct]
    P, N = max(1, int(y.sum())), max(1, int((1 - y).sum()))
    return np.r_[0.0, fp / N], np.r_[0.0, tp / P], np.r_[np.inf, s[distinct]]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    pos, neg = scores[labels == 1], scores[labels == 0]
    if not len(pos) or not len(neg):
        return float("nan")
    allv = np.concatenate([pos, neg])
    _, inv, counts = np.unique(allv, return_inverse=True, return_counts=True)
    cum = np.cumsum(counts)
    avg_rank = (cum - (counts - 1) / 2.0)[inv]  # 1-based average ranks with ties
    return float((avg_rank[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def tpr_at_fpr(scores: np.ndarray, labels: np.ndarray, max_fpr: float) -> float:
    fpr, tpr, _ = roc_curve(scores, labels)
    ok = fpr <= max_fpr + 1e-12
    return float(tpr[ok].max()) if ok.any() else 0.0


def binary_metrics(scores, labels, threshold: float, fprs: tuple[float, ...] = FPRS) -> dict:
    scores, labels = np.asarray(scores, float), np.asarray(labels, int)
    pos, neg = labels == 1, labels == 0
    flagged = scores >= threshold
    out = {"n": int(len(labels)), "n_pos": int(pos.sum()), "n_neg": int(neg.sum()),
           "auc": round(roc_auc(scores, labels), 4),
           "tpr": round(float(flagged[pos].mean()) if pos.any() else float("nan"), 4),
           "fpr": round(float(flagged[neg].mean()) if neg.any() else float("nan"), 4)}
    for f in fprs:
        out[f"tpr_at_fpr_{f:g}"] = round(tpr_at_fpr(scores, labels, f), 4) if pos.any() and neg.any() else float("nan")
    return out


def evaluate(records: list[dict], scores: list[float], threshold: float, fprs: tuple[float, ...] = FPRS) -> dict:
    """Overall and per-language metrics. Records without `lang` get one from language ID."""
    from lmsmith.data.langid import detect

    langs = [r.get("lang") or detect(r["text"])[0] for r in records]
    s, y = np.asarray(scores, float), np.asarray([r["label"] for r in records], int)
    report = {"threshold": threshold, "overall": binary_metrics(s, y, threshold, fprs), "languages": {}}
    for lang in sorted(set(langs)):
        m = np.array([x == lang for x in langs])
        report["languages"][lang] = binary_metrics(s[m], y[m], threshold, fprs)
    return report


def plot_roc(records: list[dict], scores: list[float], path: str | Path, title: str = "lmsmith guard") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from lmsmith.data.langid import detect

    langs = [r.get("lang") or detect(r["text"])[0] for r in records]
    s, y = np.asarray(scores, float), np.asarray([r["label"] for r in records], int)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for lang in ["all", *sorted(set(langs))]:
        m = np.ones(len(y), bool) if lang == "all" else np.array([x == lang for x in langs])
        if len(set(y[m])) < 2:
            continue
        fpr, tpr, _ = roc_curve(s[m], y[m])
        ax.step(np.maximum(fpr, 1e-4), tpr, where="post", lw=2.5 if lang == "all" else 1.2,
                label=f"{lang} (AUC {roc_auc(s[m], y[m]):.3f})")
    for f in FPRS:
        ax.axvline(f, color="grey", ls=":", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false-positive rate (log)")
    ax.set_ylabel("true-positive rate")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(report: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    return path
