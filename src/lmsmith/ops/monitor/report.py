"""The drift report as one self-contained HTML page: a verdict table and plots (PNG embedded as base64)."""

from __future__ import annotations

import base64
import html
import io
import json
from pathlib import Path
from typing import Any

import numpy as np


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def plots(report: dict[str, Any]) -> dict[str, str]:
    """Title -> base64 PNG for what the report has data for."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    art = report.get("_artifacts", {})
    sig = report["signals"]
    out: dict[str, str] = {}
    if "ref_len" in art:
        fig, ax = plt.subplots(figsize=(6, 3))
        hi = float(np.percentile(np.r_[art["ref_len"], art["cur_len"]], 99)) + 1
        bins = np.linspace(0, hi, 30)
        ax.hist(art["ref_len"], bins, alpha=0.6, density=True, label="reference")
        ax.hist(art["cur_len"], bins, alpha=0.6, density=True, label="current")
        ax.set_xlabel("tokens per text")
        ax.legend()
        out["Length distribution"] = _png(fig)
    if "language" in sig:
        ref, cur = sig["language"]["reference"], sig["language"]["current"]
        langs = sorted(set(ref) | set(cur), key=lambda k: -(ref.get(k, 0) + cur.get(k, 0)))[:8]
        fig, ax = plt.subplots(figsize=(6, 3))
        x = np.arange(len(langs))
        ax.bar(x - 0.2, [ref.get(k, 0) for k in langs], 0.4, label="reference")
        ax.bar(x + 0.2, [cur.get(k, 0) for k in langs], 0.4, label="current")
        ax.set_xticks(x, langs)
        ax.set_ylabel("share of texts")
        ax.legend()
        out["Language mix"] = _png(fig)
    new = sig.get("unseen_tokens", {}).get("top_new_tokens") or []
    if new:
        fig, ax = plt.subplots(figsize=(6, 0.25 * len(new) + 1))
        ax.barh([t for t, _ in new][::-1], [c for _, c in new][::-1])
        ax.set_xlabel("count in current traffic")
        out["Top new tokens"] = _png(fig)
    if "er" in art and len(art["er"]) > 2 and len(art["ec"]) > 2:
        Z = np.concatenate([art["er"], art["ec"]])
        Z = Z - Z.mean(0)
        _, _, vt = np.linalg.svd(Z, full_matrices=False)
        P = Z @ vt[:2].T
        n = len(art["er"])
        fig, ax = plt.subplots(figsize=(5, 4))
        ax.scatter(P[:n, 0], P[:n, 1], s=6, alpha=0.5, label="reference")
        ax.scatter(P[n:, 0], P[n:, 1], s=6, alpha=0.5, label="current")
        ax.set_xlabel("PC 1")
        ax.set_ylabel("PC 2")
        ax.legend()
        out["Embeddings (PCA)"] = _png(fig)
    if "clf_scores" in art:
        s, n = art["clf_scores"], len(art["er"])
        fig, ax = plt.subplots(figsize=(6, 3))
        ax.hist(s[:n], 30, alpha=0.6, density=True, label="reference")
        ax.hist(s[n:], 30, alpha=0.6, density=True, label="current")
        ax.set_xlabel("domain-classifier score (out of fold)")
        ax.legend()
        out["Domain classifier"] = _png(fig)
    return out


def _summary(name: str, s: dict[str, Any]) -> str:
    keys = {"unseen_tokens": ("share", "expected_share"), "vocabulary": ("unique_ratio_reference", "unique_ratio_current"),
            "length": ("ks_statistic", "psi"), "language": ("tvd",), "domain_classifier": ("roc_auc",),
            "mmd": ("mmd2",)}.get(name, ())
    parts = [f"{k}={s[k]:.4g}" for k in keys if isinstance(s.get(k), (int, float))]
    return ", ".join(parts)


def write_html(report: dict[str, Any], path: str | Path, title: str = "lmsmith drift report") -> Path:
    rows = "".join(
        f"<tr class='{'bad' if s['drift'] else 'ok'}'><td>{html.escape(k)}</td><td>{'DRIFT' if s['drift'] else 'ok'}"
        f"</td><td>{s.get('p_value', float('nan')):.4g}</td><td>{html.escape(_summary(k, s))}</td></tr>"
        for k, s in report["signals"].items())
    imgs = "".join(f"<figure><figcaption>{html.escape(t)}</figcaption><img src='data:image/png;base64,{b}'></figure>"
                   for t, b in plots(report).items())
    public = {k: v for k, v in report.items() if not k.startswith("_")}
    verdict = "Drift detected" if report["drift"] else "No drift"
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title><style>
body{{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;color:#222}}
table{{border-collapse:collapse}}td,th{{padding:4px 10px;border-bottom:1px solid #ddd;text-align:left}}
tr.bad td:nth-child(2){{color:#b00;font-weight:bold}}tr.ok td:nth-child(2){{color:#070}}
figure{{display:inline-block;margin:1em}}pre{{background:#f6f6f6;padding:1em;overflow:auto;font-size:12px}}
</style></head><body><h1>{html.escape(title)}</h1>
<h2 style="color:{'#b00' if report['drift'] else '#070'}">{verdict}</h2>
<p>reference: {report['reference']['texts']} texts, current: {report['current']['texts']} texts;
alpha = {report['config']['alpha']} (each signal at {report['config']['alpha_per_signal']:.4g})</p>
<table><tr><th>signal</th><th>verdict</th><th>p-value</th><th>effect</th></tr>{rows}</table>
{imgs}<details><summary>JSON</summary><pre>{html.escape(json.dumps(public, indent=2, ensure_ascii=False))}</pre></details>
</body></html>"""
    p = Path(path)
    p.write_text(page, encoding="utf-8")
    return p
