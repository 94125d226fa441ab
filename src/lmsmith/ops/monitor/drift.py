"""Drift between a reference and a current set of texts: one verdict per signal and an overall `drift`.

Signals (each answers "is the current traffic different?" in its own way):
- `unseen_tokens`: share of current word tokens absent from the reference vocabulary (+ the top new tokens);
- `vocabulary`: unique-token ratio (types / tokens) of current vs reference;
- `length`: tokens per text, two-sample Kolmogorov-Smirnov test and population stability index (PSI);
- `language`: language mix (lmsmith.data.langid), total-variation distance;
- `domain_classifier`: ROC AUC of a (ridge) linear classifier telling reference from current embeddings (cross-fitted);
- `mmd`: maximum mean discrepancy of the embeddings (RBF kernel, median bandwidth).

A signal drifts when its test is significant and its effect is large enough to matter (a PSI of 0.1, a 0.1
shift in language mix, an AUC of 0.6, ...), as monitoring tools do to avoid paging on noise from large
samples. `alpha` is the family-wise false-alarm rate of the overall verdict: each of the k signals is tested at
alpha / k (Bonferroni), so same-distribution traffic raises `drift` in at most alpha of comparisons. The token,
language, classifier and MMD p-values come from permutation tests over the pooled texts,
which are exact for any sample size; the KS p-value is asymptotic. The classifier's AUC is tested by permutation too: a cross-fitted AUC
has more variance than the Mann-Whitney null suggests, and a normal approximation raised false alarms.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from functools import lru_cache
from typing import Any, Callable

import numpy as np
from pydantic import Field, field_validator

from lmsmith.config import Config
from lmsmith.errors import LmsmithError

WORD = re.compile(r"\w+", re.UNICODE)


SIGNALS = ("unseen_tokens", "vocabulary", "length", "language", "domain_classifier", "mmd")


class DriftConfig(Config):
    alpha: float = Field(0.05, gt=0, lt=1, description="false-alarm rate of the overall verdict; each signal is "
                         "tested at alpha / (number of signals)")
    permutations: int = Field(400, ge=10, description="permutations of the permutation tests")
    seed: int = Field(0, description="seed of the samples, permutations and folds")
    max_texts: int = Field(20_000, ge=10, description="texts per side for the token, length and language signals "
                           "(a seeded sample beyond)")
    max_embed: int = Field(1_000, ge=10, description="texts per side embedded (a seeded sample beyond)")
    top_new: int = Field(20, ge=0, description="new tokens to list")
    min_unseen_excess: float = Field(0.05, ge=0, description="unseen-token share above its expected value that counts")
    min_vocab_log_ratio: float = Field(0.10, ge=0, description="|log unique-token ratio| shift that counts")
    min_psi: float = Field(0.10, ge=0, description="length PSI that counts")
    min_language_tvd: float = Field(0.10, ge=0, le=1, description="language-mix total variation that counts")
    min_auc: float = Field(0.60, ge=0.5, le=1, description="domain-classifier ROC AUC that counts")
    embedder: str = Field("all-MiniLM-L6-v2", description="sentence embedder for the embedding signals: "
                          "all-MiniLM-L6-v2, a local model dir, or none")
    languages: list[str] = Field([], description="restrict language ID to these ISO codes (cs,sk,en)")
    signals: list[str] = Field(list(SIGNALS), description="signals to compute")

    @field_validator("signals")
    @classmethod
    def _known(cls, v: list[str]) -> list[str]:
        unknown = sorted(set(v) - set(SIGNALS))
        if unknown or not v:
            raise ValueError(f"unknown signals {unknown}; choose from {', '.join(SIGNALS)}")
        return v


def tokenize(text: str) -> list[str]:
    return WORD.findall(text.lower())


def _perm_p(stat: float, null: np.ndarray, two_sided: bool = False) -> float:
    if two_sided:
        c = null.mean()
        return float((1 + np.sum(np.abs(null - c) >= abs(stat - c) - 1e-12)) / (1 + len(null)))
    return float((1 + np.sum(null >= stat - 1e-12)) / (1 + len(null)))


def _assignments(n_ref: int, n_cur: int, permutations: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Boolean `is reference` masks over the pooled texts: the observed split first, then random ones."""
    observed = np.r_[np.ones(n_ref, bool), np.zeros(n_cur, bool)]
    return [observed] + [rng.permutation(observed) for _ in range(permutations)]


# ------------------------------------------------------------------------------------------ token signals
def token_signals(ref_toks: list[list[str]], cur_toks: list[list[str]], cfg: DriftConfig,
                  rng: np.random.Generator) -> dict[str, dict[str, Any]]:
    vocab: dict[str, int] = {}
    ids = np.fromiter((vocab.setdefault(t, len(vocab)) for doc in ref_toks + cur_toks for t in doc), dtype=np.int64)
    doc_of = np.repeat(np.arange(len(ref_toks) + len(cur_toks)), [len(d) for d in ref_toks + cur_toks])
    V = max(1, len(vocab))
    unseen, ratio = [], []
    for is_ref in _assignments(len(ref_toks), len(cur_toks), cfg.permutations, rng):
        tok_ref = is_ref[doc_of]
        a, b = ids[tok_ref], ids[~tok_ref]
        seen = np.zeros(V, bool)
        seen[a] = True
        unseen.append(float((~seen[b]).mean()) if len(b) else 0.0)
        ttr_a = np.count_nonzero(np.bincount(a, minlength=V)) / max(1, len(a))
        ttr_b = np.count_nonzero(np.bincount(b, minlength=V)) / max(1, len(b))
        ratio.append(math.log(max(ttr_b, 1e-12) / max(ttr_a, 1e-12)))
    u, u_null = unseen[0], np.array(unseen[1:])
    r, r_null = ratio[0], np.array(ratio[1:])
    ref_vocab = {t for d in ref_toks for t in d}
    new = Counter(t for d in cur_toks for t in d if t not in ref_vocab)
    p_u, p_r = _perm_p(u, u_null), _perm_p(r, r_null, two_sided=True)
    excess = u - float(u_null.mean())
    shift = r - float(r_null.mean())
    n_ref_tok, n_cur_tok = sum(map(len, ref_toks)), sum(map(len, cur_toks))
    ttr_ref = len(ref_vocab) / max(1, n_ref_tok)
    ttr_cur = len({t for d in cur_toks for t in d}) / max(1, n_cur_tok)
    return {
        "unseen_tokens": {
            "drift": bool(p_u < cfg.alpha and excess >= cfg.min_unseen_excess), "share": u,
            "expected_share": float(u_null.mean()), "p_value": p_u, "threshold": cfg.min_unseen_excess,
            "top_new_tokens": [[t, c] for t, c in new.most_common(cfg.top_new)]},
        "vocabulary": {
            "drift": bool(p_r < cfg.alpha and abs(shift) >= cfg.min_vocab_log_ratio), "unique_ratio_reference": ttr_ref,
            "unique_ratio_current": ttr_cur, "log_ratio_vs_expected": shift, "p_value": p_r,
            "threshold": cfg.min_vocab_log_ratio},
    }


# ------------------------------------------------------------------------------------------ length
def ks_2samp(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """Two-sample Kolmogorov-Smirnov statistic and asymptotic p-value (Stephens' small-sample correction)."""
    a, b = np.sort(a), np.sort(b)
    grid = np.concatenate([a, b])
    d = float(np.max(np.abs(np.searchsorted(a, grid, "right") / len(a) - np.searchsorted(b, grid, "right") / len(b))))
    ne = len(a) * len(b) / (len(a) + len(b))
    lam = (math.sqrt(ne) + 0.12 + 0.11 / math.sqrt(ne)) * d
    if lam < 0.2:
        return d, 1.0
    p = 2 * sum((-1) ** (k - 1) * math.exp(-2 * k * k * lam * lam) for k in range(1, 101))
    return d, float(min(1.0, max(0.0, p)))


def psi(ref: np.ndarray, cur: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = np.unique(np.quantile(ref, np.linspace(0, 1, bins + 1)[1:-1]))
    r = np.bincount(np.searchsorted(edges, ref, "right"), minlength=len(edges) + 1) / len(ref)
    c = np.bincount(np.searchsorted(edges, cur, "right"), minlength=len(edges) + 1) / len(cur)
    r, c = np.clip(r, 1e-4, None), np.clip(c, 1e-4, None)
    return float(np.sum((c - r) * np.log(c / r)))


def length_signal(ref_len: np.ndarray, cur_len: np.ndarray, cfg: DriftConfig) -> dict[str, Any]:
    d, p = ks_2samp(ref_len, cur_len)
    value = psi(ref_len, cur_len)
    return {"drift": bool(p < cfg.alpha and value >= cfg.min_psi), "ks_statistic": d, "p_value": p, "psi": value,
            "threshold": cfg.min_psi, "mean_reference": float(ref_len.mean()), "mean_current": float(cur_len.mean()),
            "p50_reference": float(np.median(ref_len)), "p50_current": float(np.median(cur_len))}


# ------------------------------------------------------------------------------------------ language
@lru_cache(maxsize=200_000)
def _language(text: str, candidates: tuple[str, ...]) -> str:
    from lmsmith.data.langid import detect

    return detect(text, candidates)[0] if text.strip() else "und"


def detect_languages(texts: list[str], candidates: tuple[str, ...] = ()) -> list[str]:
    return [_language(t, tuple(candidates)) for t in texts]


def language_signal(ref_lang: list[str], cur_lang: list[str], cfg: DriftConfig,
                    rng: np.random.Generator) -> dict[str, Any]:
    labels = {lab: i for i, lab in enumerate(sorted(set(ref_lang) | set(cur_lang)))}
    codes = np.array([labels[x] for x in ref_lang + cur_lang])
    L = len(labels)
    tvds = []
    for is_ref in _assignments(len(ref_lang), len(cur_lang), cfg.permutations, rng):
        pa = np.bincount(codes[is_ref], minlength=L) / max(1, is_ref.sum())
        pb = np.bincount(codes[~is_ref], minlength=L) / max(1, (~is_ref).sum())
        tvds.append(0.5 * float(np.abs(pa - pb).sum()))
    tvd, p = tvds[0], _perm_p(tvds[0], np.array(tvds[1:]))

    def mix(xs: list[str]) -> dict[str, float]:
        return {k: round(v / len(xs), 4) for k, v in Counter(xs).most_common(8)}

    return {"drift": bool(p < cfg.alpha and tvd >= cfg.min_language_tvd), "tvd": tvd, "p_value": p,
            "threshold": cfg.min_language_tvd, "reference": mix(ref_lang), "current": mix(cur_lang)}


# ------------------------------------------------------------------------------------------ embeddings
def _ridge_cv_operator(X: np.ndarray, fold: np.ndarray, l2: float = 10.0) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per fold (test idx, train idx, M) with out-of-fold scores = M @ labels[train].

    A ridge-regression classifier (least squares on +-1 labels, closed form) is linear in the labels, so the
    cross-fitted scores of any relabelling cost one matrix product: the permutation test of the AUC is cheap."""
    ops = []
    for k in np.unique(fold):
        te, tr = np.flatnonzero(fold == k), np.flatnonzero(fold != k)
        mu = X[tr].mean(0)
        Xtr, Xte = X[tr] - mu, X[te] - mu
        n = len(tr)
        center = np.eye(n) - 1.0 / n  # labels are centered on the training fold (the intercept)
        if n < X.shape[1]:  # dual form: w = Xtr^T (Xtr Xtr^T + l2 I)^-1 t
            M = Xte @ Xtr.T @ np.linalg.solve(Xtr @ Xtr.T + l2 * np.eye(n), center)
        else:
            M = Xte @ np.linalg.solve(Xtr.T @ Xtr + l2 * np.eye(X.shape[1]), Xtr.T @ center)
        ops.append((te, tr, M))
    return ops


def _aucs(labels: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """ROC AUC of each column (labels and scores: n x P), by rank sums (continuous scores: no ties)."""
    ranks = np.empty_like(scores)
    order = np.argsort(scores, axis=0)
    np.put_along_axis(ranks, order, np.arange(1, len(scores) + 1, dtype=float)[:, None].repeat(scores.shape[1], 1), 0)
    pos = labels > 0
    n1 = pos.sum(0)
    n0 = len(labels) - n1
    return ((ranks * pos).sum(0) - n1 * (n1 + 1) / 2) / (n1 * n0)


def classifier_signal(er: np.ndarray, ec: np.ndarray, cfg: DriftConfig, rng: np.random.Generator,
                      folds: int = 5) -> tuple[dict[str, Any], np.ndarray]:
    X = np.concatenate([er, ec]).astype(np.float64)
    X = (X - X.mean(0)) / (X.std(0) + 1e-6)
    y = np.r_[np.zeros(len(er)), np.ones(len(ec))]
    fold = np.empty(len(y), int)
    for cls in (0, 1):  # stratified folds
        idx = np.flatnonzero(y == cls)
        fold[rng.permutation(idx)] = np.arange(len(idx)) % folds
    labels = np.stack([y] + [rng.permutation(y) for _ in range(cfg.permutations)], 1)  # n x (P+1)
    t = np.where(labels > 0, 1.0, -1.0)
    scores = np.zeros_like(t)
    for te, tr, M in _ridge_cv_operator(X, fold):
        scores[te] = M @ t[tr]
    aucs = _aucs(labels, scores)
    auc = float(aucs[0])
    p = _perm_p(auc, aucs[1:])
    return ({"drift": bool(p < cfg.alpha and auc >= cfg.min_auc), "roc_auc": auc, "p_value": p,
             "threshold": cfg.min_auc, "folds": folds, "permutations": cfg.permutations}, scores[:, 0])


def mmd_signal(er: np.ndarray, ec: np.ndarray, cfg: DriftConfig, rng: np.random.Generator) -> dict[str, Any]:
    Z = np.concatenate([er, ec]).astype(np.float64)
    sq = np.sum(Z * Z, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * Z @ Z.T, 0)
    n = len(Z)
    iu = np.triu_indices(n, 1)
    sigma2 = float(np.median(d2[iu])) or 1.0
    K = np.exp(-d2 / sigma2)
    np.fill_diagonal(K, 0.0)
    masks = np.stack(_assignments(len(er), len(ec), cfg.permutations, rng), 1).astype(np.float64)  # n x (P+1)
    KA = K @ masks
    na, nb = len(er), len(ec)
    saa = np.einsum("ij,ij->j", masks, KA)
    sab = np.einsum("ij,ij->j", 1 - masks, KA)
    sbb = K.sum() - saa - 2 * sab
    mmd2 = saa / (na * (na - 1)) + sbb / (nb * (nb - 1)) - 2 * sab / (na * nb)
    p = _perm_p(float(mmd2[0]), mmd2[1:])
    return {"drift": bool(p < cfg.alpha), "mmd2": float(mmd2[0]), "p_value": p, "bandwidth2": sigma2,
            "permutations": cfg.permutations}


# ------------------------------------------------------------------------------------------ all together
def _sample(texts: list[str], k: int, rng: np.random.Generator) -> list[str]:
    if len(texts) <= k:
        return list(texts)
    return [texts[i] for i in sorted(rng.choice(len(texts), k, replace=False))]


def drift_report(reference: list[str], current: list[str], cfg: DriftConfig | None = None,
                 embed: Callable[[list[str]], np.ndarray] | None = None,
                 keep_artifacts: bool = False) -> dict[str, Any]:
    """Compare two lists of texts; `embed` (texts -> unit vectors) enables the embedding signals."""
    from threadpoolctl import threadpool_limits

    # the matrices here are a few hundred wide: one BLAS thread is faster, and 16x faster on a busy machine
    with threadpool_limits(limits=1, user_api="blas"):
        return _drift_report(reference, current, cfg or DriftConfig(), embed, keep_artifacts)


def _drift_report(reference: list[str], current: list[str], cfg: DriftConfig,
                  embed: Callable[[list[str]], np.ndarray] | None, keep_artifacts: bool) -> dict[str, Any]:
    if len(reference) < 10 or len(current) < 10:
        raise LmsmithError(f"drift needs at least 10 texts on each side (reference {len(reference)}, "
                           f"current {len(current)})", "widen the time window or pass larger files")
    k = len([x for x in cfg.signals if embed is not None or x not in ("domain_classifier", "mmd")])
    family_alpha = cfg.alpha
    if not 0 < family_alpha < 1:
        raise LmsmithError(f"alpha must be between 0 and 1, got {family_alpha}", "e.g. --alpha 0.05")
    cfg = cfg.model_copy(update={"alpha": family_alpha / max(1, k)})
    if 1 / (cfg.permutations + 1) >= cfg.alpha:
        need = int(np.ceil(1 / cfg.alpha))
        raise LmsmithError(f"{cfg.permutations} permutations cannot reach a p-value below {cfg.alpha:.4g} "
                           f"(alpha {family_alpha:g} over {k} signals)", f"use --permutations {need} or more")
    rng = np.random.default_rng(cfg.seed)
    ref = _sample(reference, cfg.max_texts, rng)
    cur = _sample(current, cfg.max_texts, rng)
    signals: dict[str, dict[str, Any]] = {}
    art: dict[str, Any] = {}
    want = set(cfg.signals)
    ref_toks, cur_toks = [tokenize(t) for t in ref], [tokenize(t) for t in cur]
    if want & {"unseen_tokens", "vocabulary"}:
        for k, v in token_signals(ref_toks, cur_toks, cfg, rng).items():
            if k in want:
                signals[k] = v
    if "length" in want:
        art["ref_len"] = np.array([len(t) for t in ref_toks], float)
        art["cur_len"] = np.array([len(t) for t in cur_toks], float)
        signals["length"] = length_signal(art["ref_len"], art["cur_len"], cfg)
    if "language" in want:
        k = min(cfg.max_texts, 2000)  # language ID costs ~1-4 ms a text
        rl, cl = detect_languages(ref[:k], cfg.languages), detect_languages(cur[:k], cfg.languages)
        signals["language"] = language_signal(rl, cl, cfg, rng)
    if embed is not None and want & {"domain_classifier", "mmd"}:
        er_t, ec_t = _sample(ref, cfg.max_embed, rng), _sample(cur, cfg.max_embed, rng)
        er, ec = np.asarray(embed(er_t)), np.asarray(embed(ec_t))
        art["er"], art["ec"] = er, ec
        if "domain_classifier" in want:
            signals["domain_classifier"], art["clf_scores"] = classifier_signal(er, ec, cfg, rng)
        if "mmd" in want:
            signals["mmd"] = mmd_signal(er, ec, cfg, rng)
    drifted = sorted(k for k, v in signals.items() if v["drift"])
    report = {"drift": bool(drifted), "drifted_signals": drifted, "signals": signals,
              "reference": {"texts": len(reference), "used": len(ref), "tokens": int(sum(map(len, ref_toks)))},
              "current": {"texts": len(current), "used": len(cur), "tokens": int(sum(map(len, cur_toks)))},
              "config": cfg.model_dump(exclude={"alpha"}) | {"alpha": family_alpha, "alpha_per_signal": cfg.alpha}}
    if embed is None:
        report["notes"] = ["embedding signals skipped (no embedder)"]
    if keep_artifacts:
        report["_artifacts"] = art
    return report
