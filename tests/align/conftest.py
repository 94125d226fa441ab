"""Synthetic preference data in TRL's three formats and fast tiny-model options."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

COLORS = ["red", "blue", "green", "black", "white", "brown"]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def synthetic_pairs(n: int, fmt: str = "standard") -> list[dict]:
    """The preferred answer always says 'yes', the rejected one 'no': separable, so held-out pairs are learnable."""
    rows = []
    for i in range(n):
        q = f"Is {COLORS[i % len(COLORS)]} number {i} a color?"
        good, bad = f"yes {i} yes", f"no {i} no"
        if fmt == "standard":
            rows.append({"prompt": q, "chosen": good, "rejected": bad})
        elif fmt == "conversational":
            rows.append({"prompt": [{"role": "user", "content": q}],
                         "chosen": [{"role": "assistant", "content": good}],
                         "rejected": [{"role": "assistant", "content": bad}]})
        else:  # implicit prompt
            rows.append({"chosen": [{"role": "user", "content": q}, {"role": "assistant", "content": good}],
                         "rejected": [{"role": "user", "content": q}, {"role": "assistant", "content": bad}]})
    return rows


@pytest.fixture
def pairs_file(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "pairs.jsonl", synthetic_pairs(40))


def fast(**kw) -> dict:
    base = dict(seq_len=64, batch_size=8, warmup_steps=0, mlflow=False, plot=False, workers=1, full=True,
                eval_fraction=0.0)
    base.update(kw)
    return base
