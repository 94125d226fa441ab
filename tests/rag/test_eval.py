"""Retrieval metrics against hand-computed values, `rag eval` end to end, judged answers with unparseable
verdicts counted, and `rag ask` on the engine (a tiny random model: the text is noise, the sources are not)."""

from __future__ import annotations

import json
import math

import pytest

from conftest import write_jsonl
from lmsmith.cli import main
from lmsmith.errors import LmsmithError
from lmsmith.evaluate.backends import ModelInfo
from lmsmith.rag.answer import citations
from lmsmith.rag.evaluation import evaluate_answers, evaluate_retrieval, mrr, ndcg_at, read_qa, recall_at
from lmsmith.rag.index import Index, build_index


def test_metrics_by_hand():
    ranked = ["a", "x", "b", "y"]
    assert recall_at(ranked, ["a", "b"], 2) == 0.5 and recall_at(ranked, ["a", "b"], 3) == 1.0
    assert mrr(ranked, ["b"], 4) == pytest.approx(1 / 3) and mrr(ranked, ["z"], 4) == 0.0
    ideal = 1 + 1 / math.log2(3)
    assert ndcg_at(ranked, ["a", "b"], 3) == pytest.approx((1 + 1 / math.log2(4)) / ideal)
    assert ndcg_at(["a", "b"], ["a", "b"], 2) == pytest.approx(1.0)
    assert citations("As [2] says, and [1, 3]; not [9] or [0]. Again [2].", 3) == [2, 1, 3]


def test_read_qa_errors(tmp_path):
    with pytest.raises(LmsmithError, match="no 'gold'"):
        read_qa(write_jsonl(tmp_path / "a.jsonl", [{"id": 1, "question": "q"}]))
    with pytest.raises(LmsmithError, match="no 'question'"):
        read_qa(write_jsonl(tmp_path / "b.jsonl", [{"id": 1, "gold": ["x"]}]))
    (tmp_path / "c.jsonl").write_text("")
    with pytest.raises(LmsmithError, match="empty"):
        read_qa(tmp_path / "c.jsonl")


QA = [{"id": 1, "question": "What is the capital of Poland?", "gold": ["warsaw"], "answer": "Warsaw"},
      {"id": 2, "question": "How long do you boil an egg?", "gold": "egg"},
      {"id": 3, "question": "Which river flows through Ljubljana?", "gold": ["ljubljana", "praha"]}]


class FakeJudge:
    """Answers the faithfulness prompts with a score and the relevance ones with an unparseable verdict."""

    info = ModelInfo("fake-judge")
    supports_loglikelihood = False

    def generate(self, prompts, params, progress=None):
        if progress:
            progress(len(prompts))
        return ['{"reason": "ok", "score": 4}' if "Faithfulness" in p else "I cannot decide." for p in prompts]


def test_eval_retrieval_and_judged_answers(docs_file, minilm, registry, tmp_path):
    build_index(docs_file, "KB", embedder=minilm)
    items = read_qa(write_jsonl(tmp_path / "qa.jsonl", QA))
    summary, rows = evaluate_retrieval(Index("KB"), items, k=3)
    assert rows[0]["ranked"][0] == "warsaw" and rows[1]["ranked"][0] == "egg"
    assert summary["recall@1"] < summary["recall@3"] <= 1.0  # question 3 has two gold documents
    assert summary["mrr"] == pytest.approx(1.0) and summary["n"] == 3
    seen = []

    def generate(conversations):
        seen.extend(conversations)
        return ["It is Warsaw [1]." for _ in conversations]

    answers = evaluate_answers(rows, items, generate, FakeJudge(), k=3)
    assert answers == {"faithfulness": 4.0, "faithfulness_unparseable": 0, "relevance": None,
                       "relevance_unparseable": 3, "answers_citing": 1.0}
    assert "[1] (warsaw)" in seen[0][0]["content"] and seen[0][1] == {"role": "user", "content": QA[0]["question"]}


def test_eval_cli_records_metrics_on_the_index(docs_file, minilm, registry, tmp_path, capsys):
    build_index(docs_file, "KB", embedder=minilm)
    qa = write_jsonl(tmp_path / "qa.jsonl", QA)
    assert main(["rag", "eval", "KB", "--qa", str(qa), "--k", "3", "--json", "--output", str(tmp_path / "r.json")]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["retrieval"]["mrr"] == pytest.approx(1.0) and res["index"] == "KB@1"
    assert registry.get("KB@1").metrics["rag_eval/mrr"] == pytest.approx(1.0)
    assert len(json.loads((tmp_path / "r.json").read_text())["items"]) == 3


def test_ask_on_the_engine_returns_sources(docs_file, minilm, tiny_ref, registry, capsys):
    build_index(docs_file, "KB", embedder=minilm)
    assert main(["rag", "ask", "KB", "What is the capital of Poland?", "--model", tiny_ref, "--k", "2",
                 "--max-tokens", "8", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["index"] == "KB@1" and isinstance(res["answer"], str)
    assert res["sources"][0]["id"] == "warsaw" and {"index", "cited", "text"} <= set(res["sources"][0])
