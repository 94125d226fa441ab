"""Grounded answers: retrieved chunks go into the prompt as numbered sources, the model is told to cite
them as [1], [2], and the answer comes back with the sources it was given and the ones it cited.

Generation is not done here (retrieval does not import the engine): callers pass the messages to whatever
generates (the engine in `rag ask`, the server's engine for `"rag"` chat requests).
"""

from __future__ import annotations

import re
from typing import Any

from lmsmith.rag.index import hit_record
from lmsmith.rag.store import Hit

SYSTEM = ("Answer the user's question using only the numbered sources below. After each statement, cite the "
          "source it comes from as [1], [2], etc. If the sources do not contain the answer, say that you do not know.")
CITE_RE = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


def format_sources(hits: list[Hit], max_chars: int = 2000) -> str:
    lines = []
    for i, h in enumerate(hits, 1):
        rec = hit_record(h)
        title = rec["metadata"].get("title") or rec["id"]
        lines.append(f"[{i}] ({title}) {h.text[:max_chars].strip()}")
    return "\n\n".join(lines)


def system_prompt(hits: list[Hit]) -> str:
    """The instruction and the numbered sources."""
    if not hits:
        return "No sources were found for this question; say that you do not know rather than guess."
    return f"{SYSTEM}\n\nSources:\n{format_sources(hits)}"


def rag_messages(question: str, hits: list[Hit], history: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Chat messages: a system turn with the instruction and the sources, then the conversation."""
    system = system_prompt(hits)
    history = list(history or [{"role": "user", "content": question}])
    if history and history[0].get("role") in ("system", "developer"):  # keep the caller's own system text first
        system = f"{history[0]['content']}\n\n{system}"
        history = history[1:]
    return [{"role": "system", "content": system}, *history]


def guard_hits(hits: list[Hit], guard: Any = None) -> tuple[list[Hit], list[dict[str, Any]]]:
    """Retrieved chunks are third-party text: scan each with the input guard (`lmsmith.guard`, the shipped
    model unless `guard` is a `Guard`) before it enters the prompt. Returns the clean hits, in order, and one
    record per dropped chunk ({"id", "score", "guard_score", "reasons"}), as the server does for `"rag"` chats."""
    from lmsmith.guard import scan_chunks

    results = scan_chunks([h.text for h in hits], guard)
    kept = [h for h, r in zip(hits, results) if not r.flagged]
    dropped = [{"id": hit_record(h)["id"], "chunk": h.id, "score": h.score, "guard_score": round(r.score, 4),
                "reasons": r.reasons} for h, r in zip(hits, results) if r.flagged]
    return kept, dropped


def citations(answer: str, n_sources: int) -> list[int]:
    """Source numbers cited in the answer ([2], [1, 3]), in first-cited order, only those that exist."""
    seen: list[int] = []
    for m in CITE_RE.finditer(answer):
        for part in m.group(1).split(","):
            i = int(part)
            if 1 <= i <= n_sources and i not in seen:
                seen.append(i)
    return seen


def sources(hits: list[Hit], cited: list[int] | None = None) -> list[dict[str, Any]]:
    """The response's `sources`: number, document id, chunk id, score, text, metadata, whether cited."""
    out = []
    for i, h in enumerate(hits, 1):
        rec = hit_record(h)
        out.append({"index": i, "id": rec["id"], "chunk_id": h.id, "score": rec["score"], "text": rec["text"],
                    "metadata": rec["metadata"], **({"cited": i in cited} if cited is not None else {})})
    return out
