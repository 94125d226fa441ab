"""Per-item scoring functions and the statistics on top of them (standard errors, bootstrap, McNemar)."""

from __future__ import annotations

import json
import math
import re
import string
from typing import Any, Sequence

import numpy as np

WORD = re.compile(r"\w+", re.UNICODE)


# ----------------------------------------------------------------------------- text scoring
def normalize(text: str) -> str:
    """Case-folded, whitespace-collapsed, without surrounding punctuation: 'Praha.' == ' praha'."""
    text = " ".join(str(text).split()).casefold()
    return text.strip(string.punctuation + " «»„“”")


def words(text: str) -> list[str]:
    return WORD.findall(str(text).casefold())


def exact_match(pred: str, targets: Sequence[str]) -> float:
    p = normalize(pred)
    return float(any(p == normalize(t) for t in targets))


def regex_extract(pred: str, pattern: str) -> str | None:
    m = re.search(pattern, pred, flags=re.IGNORECASE | re.DOTALL)
    if not m:
        return None
    return m.group(1) if m.groups() else m.group(0)


def terms(text: str, pattern: str | None) -> list[str]:
    """Terms for F1: regex matches (first group if any) when a pattern is given, else words."""
    if pattern:
        return [normalize(t if isinstance(t, str) else t[0]) for t in re.findall(pattern, text, flags=re.IGNORECASE)]
    return words(text)


def f1(pred_terms: list[str], gold_terms: list[str]) -> float:
    """Bag-of-terms F1 (SQuAD style)."""
    if not pred_terms and not gold_terms:
        return 1.0
    if not pred_terms or not gold_terms:
        return 0.0
    common = 0
    gold = list(gold_terms)
    for t in pred_terms:
        if t in gold:
            gold.remove(t)
            common += 1
    if common == 0:
        return 0.0
    p, r = common / len(pred_terms), common / len(gold_terms)
    return 2 * p * r / (p + r)


def rouge_l(pred: str, target: str) -> float:
    """ROUGE-L F-measure over words (longest common subsequence)."""
    a, b = words(pred), words(target)
    if not a or not b:
        return float(a == b)
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    lcs = prev[-1]
    if lcs == 0:
        return 0.0
    p, r = lcs / len(a), lcs / len(b)
    return 2 * p * r / (p + r)


def length_ok(pred: str, unit: str = "words", min: int | None = None, max: int | None = None) -> float:  # noqa: A002
    n = len(words(pred)) if unit == "words" else len(pred.strip())
    return float((min is None or n >= min) and (max is None or n <= max))


def extract_json(text: str) -> Any:
    """The first JSON value in a text (models like to wrap it in prose or ``` fences)."""
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, flags=re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    try:
        return json.loads(text)
    except ValueError:
        pass
    dec = json.JSONDecoder()
    for i, ch in enumerate(text):
        if ch in "{[":
            try:
                return dec.raw_decode(text[i:])[0]
            except ValueError:
                continue
    raise ValueError("no JSON found")


TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}


def schema_errors(value: Any, schema: dict[str, Any], path: str = "$") -> list[str]:
    """A small JSON-schema subset: type, properties, required, additionalProperties, items, enum, const,
    minimum/maximum, minLength/maxLength, minItems/maxItems. Enough for structured-output checks."""
    errs: list[str] = []
    t = schema.get("type")
    if t is not None:
        allowed = t if isinstance(t, list) else [t]
        ok = False
        for name in allowed:
            if name == "integer":
                ok |= isinstance(value, int) and not isinstance(value, bool)
            elif name == "number":
                ok |= isinstance(value, (int, float)) and not isinstance(value, bool)
            elif name in TYPES:
                ok |= isinstance(value, TYPES[name])
        if not ok:
            return [f"{path}: expected {t}, got {type(value).__name__}"]
    if "enum" in schema and value not in schema["enum"]:
        errs.append(f"{path}: {value!r} not in {schema['enum']}")
    if "const" in schema and value != schema["const"]:
        errs.append(f"{path}: must be {schema['const']!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            errs.append(f"{path}: {value} < {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errs.append(f"{path}: {value} > {schema['maximum']}")
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0) or len(value) > schema.get("maxLength", math.inf):
            errs.append(f"{path}: string length {len(value)} out of range")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                errs.append(f"{path}: missing '{key}'")
        props = schema.get("properties", {})
        for key, v in value.items():
            if key in props:
                errs += schema_errors(v, props[key], f"{path}.{key}")
            elif schema.get("additionalProperties") is False:
                errs.append(f"{path}: unexpected '{key}'")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0) or len(value) > schema.get("maxItems", math.inf):
            errs.append(f"{path}: {len(value)} items out of range")
        if isinstance(schema.get("items"), dict):
            for i, v in enumerate(value):
                errs += schema_errors(v, schema["items"], f"{path}[{i}]")
    return errs


def json_valid(pred: str, schema: dict[str, Any]) -> float:
    try:
        value = extract_json(pred)
    except ValueError:
        return 0.0
    return float(not schema_errors(value, schema))


# ----------------------------------------------------------------------------- statistics
def mean_stderr(values: Sequence[float]) -> float:
    """Standard error of the mean with the sample standard deviation (as lm-evaluation-harness reports)."""
    n = len(values)
    if n < 2:
        return float("nan")
    return float(np.std(np.asarray(values, dtype=float), ddof=1) / math.sqrt(n))


def bootstrap_ci(values: Sequence[float], iters: int = 2000, seed: int = 0, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean."""
    x = np.asarray(values, dtype=float)
    if len(x) == 0:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), size=(iters, len(x)))].mean(axis=1)
    return float(np.quantile(means, alpha / 2)), float(np.quantile(means, 1 - alpha / 2))


def paired_bootstrap(a: Sequence[float], b: Sequence[float], iters: int = 2000, seed: int = 0) -> dict[str, float]:
    """Difference of means (b - a) on paired items: CI and a two-sided p-value (share of resamples
    whose difference has the opposite sign, doubled)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = y - x
    rng = np.random.default_rng(seed)
    diffs = d[rng.integers(0, len(d), size=(iters, len(d)))].mean(axis=1)
    delta = float(d.mean())
    if delta == 0 and not d.any():
        p = 1.0
    else:
        p = float(min(1.0, 2 * min((diffs <= 0).mean(), (diffs >= 0).mean())))
    return {"delta": delta, "ci_low": float(np.quantile(diffs, 0.025)), "ci_high": float(np.quantile(diffs, 0.975)),
            "p_value": p, "test": "paired_bootstrap"}


def mcnemar(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Exact McNemar test on paired 0/1 outcomes: only items where the two models disagree count."""
    x, y = np.asarray(a) > 0.5, np.asarray(b) > 0.5
    n01 = int((~x & y).sum())  # a wrong, b right
    n10 = int((x & ~y).sum())
    n = n01 + n10
    k = min(n01, n10)
    p = 1.0 if n == 0 else min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n)
    return {"delta": float(y.mean() - x.mean()), "b_better": n01, "a_better": n10, "p_value": float(p), "test": "mcnemar"}


def is_binary(values: Sequence[float]) -> bool:
    return all(v in (0, 1, 0.0, 1.0) for v in values)


def perplexity_metrics(loglikelihood: float, tokens: int, nbytes: int, words: int) -> dict[str, float]:
    """A perplexity task's metrics from its total log-likelihood (lm-eval's definitions)."""
    return {
        "token_perplexity": math.exp(-loglikelihood / max(1, tokens)),
        "byte_perplexity": math.exp(-loglikelihood / max(1, nbytes)),
        "bits_per_byte": -loglikelihood / max(1, nbytes) / math.log(2),
        "word_perplexity": math.exp(-loglikelihood / max(1, words)),
    }
