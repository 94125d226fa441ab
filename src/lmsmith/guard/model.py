"""The guard's classifier: logistic regression over hashed n-grams plus one learned weight per rule
category, stored as safetensors (weights) + JSON (settings, threshold, how it was trained).

score = sigmoid(bias + w[ngrams] . values + sum of the weights of the rule categories that fired)
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lmsmith.errors import LmsmithError
from lmsmith.guard.features import featurize
from lmsmith.guard.rules import CATEGORIES

DEFAULT_DIR = Path(__file__).resolve().parents[1] / "assets" / "guard" / "model"
WEIGHTS, CONFIG = "guard.safetensors", "guard.json"


@dataclass
class GuardModel:
    weights: np.ndarray  # (dim,) float32
    rule_weights: dict[str, float]
    bias: float
    threshold: float = 0.5
    char_range: tuple[int, int] = (2, 5)
    norm: str = "l2"
    prefixes: tuple[int, ...] = ()  # word-prefix stem lengths (features.py)
    skip: bool = False  # skip-bigrams
    raw: bool = False  # also n-grams of the text with its diacritics
    meta: dict = field(default_factory=dict)

    @property
    def dim(self) -> int:
        return int(self.weights.shape[0])

    def ngram_logit(self, norm_text: str, raw_text: str | None = None) -> float:
        idx, val = featurize(norm_text, self.dim, self.char_range, self.norm, self.prefixes, self.skip,
                             raw_text if self.raw else None)
        return float(self.weights[idx] @ val) if len(idx) else 0.0

    def operating_point(self, fpr: float) -> float:
        """The threshold chosen on validation for false-positive rate <= `fpr` (stored by the trainer)."""
        points = self.meta.get("operating_points") or {}
        key = f"{fpr:g}"
        if key not in points:
            raise LmsmithError(f"the guard model has no operating point for FPR {key}",
                               f"use one of {sorted(points) or ['(none: retrain)']} or pass --threshold")
        return float(points[key]["threshold"])

    def rule_logit(self, categories) -> float:
        return float(sum(self.rule_weights.get(c, 0.0) for c in set(categories)))

    @staticmethod
    def prob(logit: float) -> float:
        return 1.0 / (1.0 + math.exp(-max(-60.0, min(60.0, logit))))

    def save(self, out_dir: str | Path) -> Path:
        from safetensors.numpy import save_file

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        rules = np.array([self.rule_weights.get(c, 0.0) for c in CATEGORIES], dtype=np.float32)
        save_file({"ngram_weight": self.weights.astype(np.float32), "rule_weight": rules,
                   "bias": np.array([self.bias], dtype=np.float32)}, str(out / WEIGHTS))
        (out / WEIGHTS).chmod(0o644)  # safetensors writes 0600; the model ships as package data
        cfg = {"format": "lmsmith-guard/1", "dim": self.dim, "char_range": list(self.char_range), "norm": self.norm,
               "prefixes": list(self.prefixes), "skip": self.skip, "raw": self.raw,
               "rule_categories": list(CATEGORIES), "threshold": self.threshold, **self.meta}
        (out / CONFIG).write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
        return out

    @classmethod
    def load(cls, path: str | Path | None = None) -> "GuardModel":
        from safetensors.numpy import load_file

        d = Path(path) if path else DEFAULT_DIR
        if not (d / WEIGHTS).exists() or not (d / CONFIG).exists():
            raise LmsmithError(f"no guard model in {d} (expected {WEIGHTS} and {CONFIG})",
                               "train one with `lmsmith guard train --out DIR`, or leave --model out for the shipped one")
        cfg = json.loads((d / CONFIG).read_text())
        t = load_file(str(d / WEIGHTS))
        cats = cfg.get("rule_categories", list(CATEGORIES))
        meta = {k: v for k, v in cfg.items() if k not in ("dim", "char_range", "rule_categories", "threshold", "norm",
                                                       "prefixes", "skip", "raw")}
        return cls(weights=t["ngram_weight"], rule_weights=dict(zip(cats, map(float, t["rule_weight"]))),
                   bias=float(t["bias"][0]), threshold=float(cfg["threshold"]),
                   char_range=tuple(cfg.get("char_range", (2, 5))), norm=cfg.get("norm", "l2"),
                   prefixes=tuple(cfg.get("prefixes", ())), skip=bool(cfg.get("skip", False)),
                   raw=bool(cfg.get("raw", False)), meta=meta)
