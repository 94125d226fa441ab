"""RAG on the real default model (SmolLM2-135M-Instruct) and the real default embedder."""

from __future__ import annotations

import json

import pytest

from lmsmith.cli import main
from lmsmith.rag.index import build_index


@pytest.mark.slow
def test_ask_answers_from_the_sources(docs_file, minilm, default_model_dir, registry, capsys):
    build_index(docs_file, "KB", embedder=minilm)
    assert main(["rag", "ask", "KB", "Which river flows through Ljubljana?", "--model", str(default_model_dir),
                 "--k", "1", "--max-tokens", "48", "--json"]) == 0  # k=1: a 135M model mixes up sources
    res = json.loads(capsys.readouterr().out)
    assert res["sources"][0]["id"] == "ljubljana"
    assert "Ljubljanica" in res["answer"]  # the fact only the retrieved source holds
