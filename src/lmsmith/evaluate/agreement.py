"""How well a judge agrees with people: Cohen's kappa and agreement rate for labels, Spearman and
Kendall (tau-b) for scores. Plain numpy, so the numbers can be checked against scipy/sklearn."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np


def agreement_rate(a: Sequence[Any], b: Sequence[Any]) -> float:
    _same_length(a, b)
    return float(np.mean([x == y for x, y in zip(a, b)])) if a else float("nan")


def cohen_kappa(a: Sequence[Any], b: Sequence[Any]) -> float:
    """(observed - chance agreement) / (1 - chance agreement), chance from each rater's label frequencies."""
    _same_length(a, b)
    n = len(a)
    if n == 0:
        return float("nan")
    labels = sorted(set(a) | set(b), key=str)
    po = sum(x == y for x, y in zip(a, b)) / n
    pe = sum((list(a).count(lab) / n) * (list(b).count(lab) / n) for lab in labels)
    if pe == 1:
        return 1.0 if po == 1 else 0.0
    return (po - pe) / (1 - pe)


def ranks(x: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties get their average rank."""
    arr = np.asarray(x, dtype=float)
    order = np.argsort(arr, kind="mergesort")
    r = np.empty(len(arr))
    i = 0
    while i < len(arr):
        j = i
        while j + 1 < len(arr) and arr[order[j + 1]] == arr[order[i]]:
            j += 1
        r[order[i:j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return r


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    _same_length(a, b)
    ra, rb = ranks(a), ranks(b)
    if len(ra) < 2 or ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def kendall(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b (accounts for ties in either ranking)."""
    _same_length(a, b)
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(x)
    concordant = discordant = ties_x = ties_y = 0
    for i in range(n):
        dx, dy = np.sign(x[i + 1:] - x[i]), np.sign(y[i + 1:] - y[i])
        prod = dx * dy
        concordant += int((prod > 0).sum())
        discordant += int((prod < 0).sum())
        ties_x += int(((dx == 0) & (dy != 0)).sum())
        ties_y += int(((dy == 0) & (dx != 0)).sum())
    denom = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return float("nan") if denom == 0 else (concordant - discordant) / denom


def _same_length(a: Sequence[Any], b: Sequence[Any]) -> None:
    if len(a) != len(b):
        raise ValueError(f"the two label lists differ in length ({len(a)} vs {len(b)})")
