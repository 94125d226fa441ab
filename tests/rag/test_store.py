"""The vector stores: same answers from the embedded store and Qdrant (local mode), filters, deletes,
upserts, persistence, BM25 keyword search and hybrid fusion."""

from __future__ import annotations

import numpy as np
import pytest

from lmsmith.errors import LmsmithError
from lmsmith.rag import store as S
from lmsmith.rag.store import EmbeddedStore, Point, QdrantStore, hybrid

WORDS = ["alpha", "beta", "gamma", "delta", "praha", "brno"]


def points(n: int = 400, dim: int = 16, seed: int = 0) -> tuple[list[Point], np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return [Point(f"d{i}#0", x[i], f"text {WORDS[i % 6]} item {i}",
                  {"doc_id": f"d{i}", "lang": "cs" if i % 3 == 0 else "en", "n": i % 5}) for i in range(n)], x


@pytest.fixture(params=["embedded", "qdrant"])
def store(request, tmp_path):
    if request.param == "embedded":
        st = EmbeddedStore(tmp_path / "e", dim=16)
    else:
        st = QdrantStore(f"qdrant+memory://{tmp_path.name}", "c", dim=16, create=True)
    yield st
    st.close()


def exact(x: np.ndarray, q: np.ndarray, k: int, keep=None) -> list[str]:
    s = x @ q
    order = [i for i in np.argsort(-s) if keep is None or keep(i)]
    return [f"d{i}#0" for i in order[:k]]


def test_both_backends_give_the_same_top_k(tmp_path):
    pts, x = points()
    emb = EmbeddedStore(tmp_path / "e", dim=16)
    qd = QdrantStore(f"qdrant+path://{tmp_path}/q", "c", dim=16, create=True)
    for st in (emb, qd):
        st.upsert(pts)
    for qi in (3, 77, 201):
        a, b = emb.search(x[qi], 10), qd.search(x[qi], 10)
        assert [h.id for h in a] == [h.id for h in b] == exact(x, x[qi], 10)
        assert np.allclose([h.score for h in a], [h.score for h in b], atol=1e-4)
        fa, fb = emb.search(x[qi], 5, {"lang": "en"}), qd.search(x[qi], 5, {"lang": "en"})
        assert [h.id for h in fa] == [h.id for h in fb] == exact(x, x[qi], 5, keep=lambda i: i % 3 != 0)


def test_filters_upserts_deletes(store):
    pts, x = points()
    store.upsert(pts)
    assert store.count() == 400
    hits = store.search(x[10], 5, {"lang": "cs", "n": 2})
    assert hits and all(h.metadata["lang"] == "cs" and h.metadata["n"] == 2 for h in hits)
    assert store.search(x[10], 5, {"lang": "de"}) == []
    store.delete([f"d{i}#0" for i in range(0, 200)])
    assert store.count() == 200
    assert all(int(h.id[1:-2]) >= 200 for h in store.search(x[10], 20))
    store.upsert([Point("d300#0", x[5], "moved", {"doc_id": "d300"})])  # an upsert replaces the vector and text
    top = store.search(x[5], 1)[0]
    assert top.id == "d300#0" and top.text == "moved" and top.score == pytest.approx(1.0, abs=1e-4)
    assert store.count() == 200


def test_keyword_search_and_hybrid(store):
    pts, x = points(60)
    pts[17].text = "the unique word zanzibar appears here"
    store.upsert(pts)
    kw = store.keyword_search("Zanzibar?", 3)
    assert kw[0].id == "d17#0"
    en = store.keyword_search("alpha beta", 20, {"lang": "en"})  # alpha items are all cs, beta items en
    assert len(en) == 10 and all("beta" in h.text and h.metadata["lang"] == "en" for h in en)
    assert store.keyword_search("!!!", 3) == []
    fused = hybrid(store.search(x[40], 10), kw, 5)
    assert {"d17#0", "d40#0"} <= {h.id for h in fused}  # the keyword match joins the dense neighbour


def test_embedded_persistence_read_only_and_compaction(tmp_path):
    pts, x = points(3000)
    st = EmbeddedStore(tmp_path / "e", dim=16)
    st.upsert(pts)
    st.delete([p.id for p in pts[:1000]])  # a third tombstoned: the graph is rebuilt
    assert st.index.ntotal == 2000
    st.close()
    ro = EmbeddedStore(tmp_path / "e", read_only=True)
    assert ro.count() == 2000 and ro.dim == 16
    assert ro.search(x[2500], 1)[0].id == "d2500#0"
    with pytest.raises(LmsmithError, match="read-only"):
        ro.upsert(pts[:1])
    with pytest.raises(LmsmithError, match="16-d"):
        EmbeddedStore(tmp_path / "e", dim=32)


def test_embedded_filter_paths_agree(tmp_path, monkeypatch):
    """A broad filter goes through HNSW with an id selector, a narrow one is exact: same answers."""
    pts, x = points(2000)
    st = EmbeddedStore(tmp_path / "e", dim=16)
    st.upsert(pts)
    narrow = [h.id for h in st.search(x[7], 10, {"lang": "en"})]
    monkeypatch.setattr(S, "EXACT_FILTER_MAX", 10)
    broad = [h.id for h in st.search(x[7], 10, {"lang": "en"})]
    assert narrow == broad == exact(x, x[7], 10, keep=lambda i: i % 3 != 0)


def test_bad_filter_field(tmp_path):
    st = EmbeddedStore(tmp_path / "e", dim=4)
    with pytest.raises(LmsmithError, match="bad filter field"):
        st.search(np.ones(4, np.float32), 3, {"x'); DROP TABLE chunks; --": 1})
