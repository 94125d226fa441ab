"""Indexes as registry artifacts, with the real default embedder (all-MiniLM-L6-v2, ~1 s to load):
retrieval quality on a small set, incremental re-indexing, point-in-time versions, the embedder rule,
filters, hybrid search, migration between backends, removal, and the CLI's query contract."""

from __future__ import annotations

import json

import pytest

from conftest import DOCS, write_jsonl
from lmsmith.cli import main
from lmsmith.errors import LmsmithError
from lmsmith.rag.index import Index, build_index, get_index, hit_record, migrate_index, parse_filter, remove_index


def top_ids(index: Index, q: str, k: int = 3, **kw) -> list[str]:
    return [hit_record(h)["id"] for h in index.query(q, k, **kw)]


def test_index_query_and_lineage(docs_file, minilm, registry):
    mv, st = build_index(docs_file.parent, "KB", embedder=minilm, command="lmsmith rag index")
    assert (mv.ref, mv.kind, st.added, st.chunks_embedded) == ("KB@1", "index", 6, 6)
    assert mv.base == minilm and mv.lineage.stage == "rag-index"
    assert mv.lineage.data[0].path.endswith("kb.jsonl") and len(mv.lineage.data[0].sha256) == 64
    ix = Index("KB")
    assert top_ids(ix, "What is the capital of Poland?")[0] == "warsaw"
    assert top_ids(ix, "How long should I cook an egg?")[0] == "egg"
    assert top_ids(ix, "How much memory does a GPU have?")[0] == "gpu"
    rec = hit_record(ix.query("capital of Slovenia", 1)[0])
    assert set(rec) == {"id", "score", "text", "metadata"}
    assert rec["id"] == "ljubljana" and rec["metadata"] == {"lang": "en", "source": "kb.jsonl"} and 0 < rec["score"] <= 1


def test_incremental_reindex_and_point_in_time(tmp_path, minilm, registry):
    d = tmp_path / "docs"
    write_jsonl(d / "kb.jsonl", DOCS)
    build_index(d, "KB", embedder=minilm)
    again, st = build_index(d, "KB")  # nothing changed: no new version, nothing embedded
    assert again.ref == "KB@1" and not st.created and st.unchanged == 6
    changed = [dict(r) for r in DOCS if r["id"] != "egg"]  # egg removed
    changed[0]["text"] = "Brno is the second largest city of the Czech Republic, known for its trade fairs."
    changed.append({"id": "new", "text": "Bratislava is the capital of Slovakia.", "lang": "en"})
    write_jsonl(d / "kb.jsonl", changed)
    mv2, st = build_index(d, "KB")
    assert mv2.ref == "KB@2" and (st.added, st.changed, st.removed, st.unchanged) == (1, 1, 1, 4)
    assert st.chunks_embedded == 2  # only the new and the changed document
    assert mv2.lineage.parent == "KB@1"
    latest, old = Index("KB"), Index("KB@1")
    assert top_ids(latest, "second largest Czech city trade fairs", 1) == ["praha"]
    assert "egg" not in top_ids(latest, "boil an egg", 6)
    assert top_ids(old, "boil an egg", 1) == ["egg"]  # KB@1 is the index as it was
    assert top_ids(latest, "capital of Slovakia", 1) == ["new"]
    assert latest.store.count() == 6 and old.store.count() == 6


def test_embedder_mismatch_is_refused(docs_file, minilm, other_encoder, registry):
    build_index(docs_file, "KB", embedder=minilm)
    with pytest.raises(LmsmithError, match="not comparable"):
        Index("KB", embedder=other_encoder)
    with pytest.raises(LmsmithError, match="not comparable"):
        build_index(docs_file, "KB", embedder=other_encoder)
    assert Index("KB", embedder=minilm).ref == "KB@1"  # naming the index's own embedder is fine


def test_llm_mean_pooled_embedder(docs_file, tiny_ref, registry):
    build_index(docs_file, "LLMKB", embedder=tiny_ref)
    ix = Index("LLMKB")
    assert ix.embedder.causal and ix.embedder.dim == ix.store.dim
    assert top_ids(ix, DOCS[3]["text"], 1) == ["gpu"]  # a document's own text finds it


def test_filters_and_hybrid(docs_file, minilm, registry):
    build_index(docs_file, "KB", embedder=minilm)
    ix = Index("KB")
    assert top_ids(ix, "capital city", 6, filter={"lang": "cs"}) == ["praha"]
    assert top_ids(ix, "GPU", 6, filter={"year": 2023}) == ["gpu"]
    assert top_ids(ix, "capital", 3, filter={"lang": "de"}) == []
    assert top_ids(ix, "QZX-7731", 1, hybrid_search=True) == ["zxq"]  # the exact part number, via BM25
    assert parse_filter(["lang=cs", "year=2023", "ok=true"]) == {"lang": "cs", "year": 2023, "ok": True}
    with pytest.raises(LmsmithError, match="FIELD=VALUE"):
        parse_filter(["lang"])


def test_migrate_to_qdrant_and_back(docs_file, minilm, registry, tmp_path):
    build_index(docs_file, "KB", embedder=minilm)
    url = f"qdrant+path://{tmp_path}/qdrant"
    mv = migrate_index("KB", url)
    assert mv.ref == "KB@2" and mv.tags["backend"] == "qdrant" and mv.lineage.parent == "KB@1"
    emb, qd = Index("KB@1"), Index("KB@2")
    for q in ("capital of Poland", "GPU memory", "cooking eggs", "river"):
        a, b = emb.query(q, 5), qd.query(q, 5)
        assert [h.id for h in a] == [h.id for h in b]
        assert [round(h.score, 4) for h in a] == [round(h.score, 4) for h in b]
    assert top_ids(qd, "QZX-7731", 1, hybrid_search=True) == ["zxq"]
    assert top_ids(qd, "capital city", 6, filter={"lang": "cs"}) == ["praha"]
    # an incremental re-index of a Qdrant index writes a new collection; the old version stays queryable
    rows = [dict(r) for r in DOCS] + [{"id": "new", "text": "Bratislava is the capital of Slovakia."}]
    write_jsonl(docs_file, rows)
    mv3, st = build_index(docs_file, "KB")
    assert mv3.ref == "KB@3" and st.chunks_embedded == 1
    assert top_ids(Index("KB@3"), "capital of Slovakia", 1) == ["new"]
    assert "new" not in top_ids(Index("KB@2"), "capital of Slovakia", 7)
    back = migrate_index("KB@3", "embedded", name="KB2")
    assert back.ref == "KB2@1" and Index("KB2").store.count() == 7
    with pytest.raises(LmsmithError, match="already lives"):
        migrate_index("KB2", "embedded")
    assert remove_index("KB") == ["KB@1", "KB@2", "KB@3"]
    with pytest.raises(LmsmithError, match="unknown index 'KB'"):
        get_index("KB")


def test_cli_query_contract_and_errors(docs_file, minilm, registry, tmp_path, capsys):
    assert main(["rag", "index", str(docs_file), "--name", "KB", "--embedder", minilm]) == 0
    q = write_jsonl(tmp_path / "q.jsonl", [{"id": "q1", "text": "capital of Poland"}, {"id": 7, "text": "egg"}])
    capsys.readouterr()
    assert main(["rag", "query", "KB", "--queries", str(q), "--k", "2", "--json", "--filter", "lang=en"]) == 0
    lines = [json.loads(ln) for ln in capsys.readouterr().out.splitlines()]
    assert [ln["id"] for ln in lines] == ["q1", 7]
    assert all(set(ln) == {"id", "hits"} and len(ln["hits"]) == 2 for ln in lines)
    assert all(set(h) == {"id", "score", "text", "metadata"} for ln in lines for h in ln["hits"])
    assert lines[0]["hits"][0]["id"] == "warsaw" and lines[1]["hits"][0]["id"] == "egg"
    assert main(["rag", "query", "NOPE", "--query", "x"]) == 1
    assert "unknown index 'NOPE'" in capsys.readouterr().err
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["rag", "index", str(empty), "--name", "E"]) == 1
    assert "is empty" in capsys.readouterr().err
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": 1, "body": "x"}])
    assert main(["rag", "index", str(bad), "--name", "E"]) == 1
    err = capsys.readouterr().err
    assert "has no 'text' field" in err and err.count("\n") == 1
    assert main(["rag", "rm", "KB"]) == 0 and main(["rag", "query", "KB", "--query", "x"]) == 1
