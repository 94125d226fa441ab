"""RAG on the real default model (SmolLM2-135M-Instruct) and the real default embedder: the whole path —
retrieval, the numbered-sources prompt, the engine, the answer and its sources. (A 135M model does not
reliably prefer a source over what it believes: asked which river flows through Ljubljana with the right
source, it said "the Danube". Grounding quality is what `rag eval` measures, with a stronger model.)"""

from __future__ import annotations

import json

import pytest

from lmsmith.cli import main
from lmsmith.rag.index import build_index


@pytest.mark.slow
def test_ask_answers_with_sources(docs_file, minilm, default_model_dir, registry, capsys):
    build_index(docs_file, "KB", embedder=minilm)
    assert main(["rag", "ask", "KB", "What is the capital of Poland?", "--model", str(default_model_dir),
                 "--k", "1", "--max-tokens", "32", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["sources"][0]["id"] == "warsaw" and res["index"] == "KB@1"
    assert "Warsaw" in res["answer"]
