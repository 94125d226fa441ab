"""Helpers for the training tests: small chat/text files and a fast tiny-model config."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).parent / "data"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    rows = [chat(f"What is {i} plus {i}?", f"{i} plus {i} is {2 * i}.") for i in range(12)]
    return write_jsonl(tmp_path / "chat.jsonl", rows)


@pytest.fixture
def prose() -> Path:
    return DATA / "prose.txt"


def fast(**kw) -> dict:
    """Options that keep a tiny-model run to a second or two."""
    base = dict(seq_len=64, batch_size=4, lr=3e-3, warmup_steps=0, mlflow=False, plot=False, workers=1)
    base.update(kw)
    return base
