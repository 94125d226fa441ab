"""Real-language samples for the data tests (written for this suite), a recombined Czech corpus, JSONL helpers."""

from __future__ import annotations

import json
import random
import re
from pathlib import Path

TEXTS = Path(__file__).parent / "texts"


def paragraphs(lang: str) -> list[str]:
    return [p.strip() for p in (TEXTS / f"{lang}.txt").read_text(encoding="utf-8").split("\n\n") if p.strip()]


def czech_corpus(target_chars: int = 300_000, seed: int = 0) -> str:
    """Documents of 3-7 sentences drawn from the Czech training paragraphs (never the held-out ones)."""
    sentences = [s for p in paragraphs("cs") for s in re.split(r"(?<=[.!?])\s+", p) if s]
    rng = random.Random(seed)
    docs, total = [], 0
    while total < target_chars:
        doc = " ".join(rng.sample(sentences, rng.randint(3, 7)))
        docs.append(doc)
        total += len(doc) + 2
    return "\n\n".join(docs) + "\n"


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
