"""`lmsmith rag eval`: retrieval quality against gold document ids (recall@k, MRR, nDCG@k) and, with a
generator, answer faithfulness (is every claim supported by the retrieved sources?) and relevance (does it
answer the question?) graded by the LLM judge, with the counts of verdicts it could not parse.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np

from lmsmith.errors import LmsmithError
from lmsmith.evaluate.backends import Backend
from lmsmith.evaluate.judge import JudgeConfig, judge
from lmsmith.rag.answer import citations, format_sources, rag_messages
from lmsmith.rag.index import Index, hit_record

FAITHFULNESS = ("Faithfulness: score 5 if every statement in the response is supported by the sources in the "
                "question, 1 if the response makes claims the sources do not support or contradict. A response "
                "that says the sources do not answer the question is faithful.")
RELEVANCE = ("Relevance: score 5 if the response directly and completely answers the question, 1 if it is off "
             "topic or does not answer it.")
Generate = Callable[[list[list[dict[str, Any]]]], list[str]]


def read_qa(path: str | Path) -> list[dict[str, Any]]:
    p = Path(path).expanduser()
    if not p.exists():
        raise LmsmithError(f"no such file: {p}")
    items = []
    for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError as e:
            raise LmsmithError(f"{p}:{n} is not valid JSON: {e.msg}") from None
        q = rec.get("question", rec.get("text", rec.get("query"))) if isinstance(rec, dict) else None
        if not isinstance(q, str) or not q.strip():
            raise LmsmithError(f"{p}:{n} has no 'question'", 'each line: {"id", "question", "gold": [doc ids], "answer"?}')
        gold = rec.get("gold", rec.get("gold_ids", rec.get("doc_ids")))
        if gold is None:
            raise LmsmithError(f"{p}:{n} has no 'gold' document ids", 'add "gold": ["doc-id", ...]')
        gold = [str(g) for g in (gold if isinstance(gold, list) else [gold])]
        items.append({"id": rec.get("id", n), "question": q, "gold": gold, "reference": rec.get("answer")})
    if not items:
        raise LmsmithError(f"{p} is empty", "one JSON object per line")
    return items


def doc_ranking(hits) -> list[str]:
    """Document ids in rank order, each once (several chunks of one document count as one hit)."""
    return list(dict.fromkeys(hit_record(h)["id"] for h in hits))


def recall_at(ranked: list[str], gold: list[str], k: int) -> float:
    return len(set(ranked[:k]) & set(gold)) / len(set(gold))


def mrr(ranked: list[str], gold: list[str], k: int) -> float:
    for r, d in enumerate(ranked[:k], 1):
        if d in gold:
            return 1.0 / r
    return 0.0


def ndcg_at(ranked: list[str], gold: list[str], k: int) -> float:
    g = set(gold)
    dcg = sum(1.0 / math.log2(r + 1) for r, d in enumerate(ranked[:k], 1) if d in g)
    ideal = sum(1.0 / math.log2(r + 1) for r in range(1, min(len(g), k) + 1))
    return dcg / ideal if ideal else 0.0


def evaluate_retrieval(index: Index, items: list[dict[str, Any]], k: int = 5, hybrid: bool = False,
                       filter: dict[str, Any] | None = None) -> tuple[dict[str, float], list[dict[str, Any]]]:
    hits = index.query_many([it["question"] for it in items], k=max(3 * k, 10), hybrid_search=hybrid, filter=filter)
    rows = []
    for it, hs in zip(items, hits):
        ranked = doc_ranking(hs)[:k]
        rows.append({"id": it["id"], "ranked": ranked, "gold": it["gold"], "hits": hs,
                     f"recall@{k}": recall_at(ranked, it["gold"], k), "recall@1": recall_at(ranked, it["gold"], 1),
                     "mrr": mrr(ranked, it["gold"], k), f"ndcg@{k}": ndcg_at(ranked, it["gold"], k)})
    summary = {key: float(np.mean([r[key] for r in rows])) for key in (f"recall@{k}", "recall@1", "mrr", f"ndcg@{k}")}
    summary["n"] = len(rows)
    return summary, rows


def evaluate_answers(rows: list[dict[str, Any]], items: list[dict[str, Any]], generate: Generate, judge_backend: Backend,
                     k: int = 5) -> dict[str, Any]:
    """Answer each question from its top-k chunks, then judge faithfulness and relevance (1-5)."""
    contexts = [r["hits"][:k] for r in rows]
    answers = generate([rag_messages(it["question"], hs) for it, hs in zip(items, contexts)])
    for r, a, hs in zip(rows, answers, contexts):
        r["answer"], r["cited"] = a, citations(a, len(hs))
    faith = judge([{"id": it["id"], "prompt": f"Sources:\n{format_sources(hs)}\n\nQuestion: {it['question']}",
                    "response": a} for it, hs, a in zip(items, contexts, answers)],
                  judge_backend, JudgeConfig(rubric=FAITHFULNESS))
    rel = judge([{"id": it["id"], "prompt": it["question"], "response": a, "reference": it.get("reference")}
                 for it, a in zip(items, answers)], judge_backend, JudgeConfig(rubric=RELEVANCE))
    for r, f, v in zip(rows, faith["items"], rel["items"]):
        r["faithfulness"], r["relevance"] = f.get("score"), v.get("score")
    fs, rs = faith["summary"], rel["summary"]
    return {"faithfulness": fs.get("mean_score"), "faithfulness_unparseable": fs["unparseable"],
            "relevance": rs.get("mean_score"), "relevance_unparseable": rs["unparseable"],
            "answers_citing": float(np.mean([bool(r["cited"]) for r in rows])) if rows else 0.0}
