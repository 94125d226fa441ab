"""Vector stores behind one small interface: upsert, delete, dense search, BM25 keyword search, filters, scan.

`EmbeddedStore` (the default, no server): FAISS HNSW for approximate nearest neighbours + SQLite for
chunks, metadata filters and BM25 (FTS5), all in one directory. It was chosen by measurement among LanceDB,
Qdrant's local mode, usearch + SQLite and sqlite-vec (bench/rag/rag.py, bench/results/rag.json): at 100k
MiniLM-sized vectors it had the best recall/latency/build-time trade-off. HNSW cannot delete, so a deleted
or replaced chunk leaves a tombstone in the graph (its key no longer maps to a row and is skipped); the
graph is rebuilt from the rows in SQLite once tombstones pass a quarter of it.

`QdrantStore` (scale-out): the same API on a Qdrant server or cluster via `qdrant-client`, selected by URL
(`http://host:6333`); `qdrant+path:///dir` is qdrant-client's local mode (tests, laptops). Keyword search
there uses Qdrant sparse vectors with the IDF modifier and BM25 term weights computed here.

Scores: dense hits score cosine similarity (vectors are unit length); keyword hits score BM25; hybrid
search fuses the two rankings by reciprocal rank fusion (RRF, k=60), as Qdrant and Elasticsearch do.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import os
import re
import sqlite3
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Protocol

import numpy as np

from lmsmith.errors import LmsmithError

RRF_K = 60
EXACT_FILTER_MAX = 20_000  # a filter matching at most this many chunks is searched exactly
KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]{0,63}$")
WORD_RE = re.compile(r"\w+", re.UNICODE)


@dataclass
class Point:
    """One chunk: `id` is the chunk id (`DOC#i`), `metadata` carries `doc_id` and the document's fields."""

    id: str
    vector: np.ndarray
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Hit:
    id: str  # chunk id
    score: float
    text: str
    metadata: dict[str, Any]


class VectorStore(Protocol):
    dim: int

    def upsert(self, points: list[Point]) -> None: ...
    def delete(self, ids: list[str]) -> None: ...
    def search(self, vector: np.ndarray, k: int, filter: dict[str, Any] | None = None) -> list[Hit]: ...
    def keyword_search(self, query: str, k: int, filter: dict[str, Any] | None = None) -> list[Hit]: ...
    def count(self) -> int: ...
    def scan(self, batch: int = 1000) -> Iterator[list[Point]]: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...


def check_filter(filter: dict[str, Any] | None) -> dict[str, Any]:
    for k, v in (filter or {}).items():
        if not KEY_RE.match(k):
            raise LmsmithError(f"bad filter field '{k}'", "a field name is letters, digits, '_', '.', '-'")
        if not isinstance(v, (str, int, float, bool)):
            raise LmsmithError(f"filter value of '{k}' must be a string, number or boolean")
    return dict(filter or {})


def hybrid(dense: list[Hit], keyword: list[Hit], k: int) -> list[Hit]:
    """Reciprocal rank fusion of two rankings: score = sum over lists of 1 / (60 + rank)."""
    fused: dict[str, tuple[float, Hit]] = {}
    for hits in (dense, keyword):
        for rank, h in enumerate(hits, 1):
            s, first = fused.get(h.id, (0.0, h))
            fused[h.id] = (s + 1.0 / (RRF_K + rank), first)
    ranked = sorted(fused.values(), key=lambda t: -t[0])[:k]
    return [Hit(h.id, round(s, 6), h.text, h.metadata) for s, h in ranked]


def fts_query(text: str) -> str | None:
    """Words of the query, each quoted (no FTS5 syntax gets through), any of them may match."""
    words = list(dict.fromkeys(w.lower() for w in WORD_RE.findall(text)))
    return " OR ".join('"' + w.replace('"', '""') + '"' for w in words) or None


# ------------------------------------------------------------------------------------------ embedded
class EmbeddedStore:
    """FAISS HNSW + SQLite (rows, JSON metadata, FTS5) in one directory; read-only when opened so."""

    DB, ANN = "chunks.sqlite", "ann.faiss"

    def __init__(self, path: str | Path, dim: int | None = None, read_only: bool = False,
                 hnsw_m: int = 32, ef_construction: int = 80, ef_search: int = 64):
        import faiss

        self.faiss = faiss
        self.path = Path(path)
        self.read_only = read_only
        self.ef_search = ef_search
        self.hnsw_m, self.ef_construction = hnsw_m, ef_construction
        db = self.path / self.DB
        if read_only:
            if not db.exists():
                raise LmsmithError(f"no vector store at {self.path}")
            self.db = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True, check_same_thread=False)
        else:
            self.path.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(db), check_same_thread=False)
            self._schema()
        self.lock = threading.RLock()
        stored_dim = self._meta("dim")
        self.dim = int(stored_dim) if stored_dim else int(dim or 0)
        if not self.dim:
            raise LmsmithError(f"the store at {self.path} does not know its dimension", "pass dim= when creating it")
        if dim and int(dim) != self.dim:
            raise LmsmithError(f"the store at {self.path} holds {self.dim}-d vectors, not {dim}-d")
        if not stored_dim and not read_only:
            self._set_meta("dim", str(self.dim))
        ann = self.path / self.ANN
        if ann.exists():  # a read-only version maps its vectors from the file instead of loading them
            flags = getattr(faiss, "IO_FLAG_MMAP_IFC", 0) | faiss.IO_FLAG_READ_ONLY if read_only else 0
            self.index = faiss.read_index(str(ann), flags)
        else:
            self.index = self._new_index()

    # --- schema
    def _schema(self) -> None:
        self.db.executescript("""
            CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
            CREATE TABLE IF NOT EXISTS chunks (key INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL,
                text TEXT NOT NULL, metadata TEXT NOT NULL, vector BLOB NOT NULL);
            CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(text, content='chunks', content_rowid='key');
            CREATE TRIGGER IF NOT EXISTS chunks_ai AFTER INSERT ON chunks BEGIN
                INSERT INTO chunks_fts(rowid, text) VALUES (new.key, new.text); END;
            CREATE TRIGGER IF NOT EXISTS chunks_ad AFTER DELETE ON chunks BEGIN
                INSERT INTO chunks_fts(chunks_fts, rowid, text) VALUES ('delete', old.key, old.text); END;
        """)

    def _meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def _set_meta(self, key: str, value: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, value))

    def _new_index(self):
        hnsw = self.faiss.IndexHNSWFlat(self.dim, self.hnsw_m, self.faiss.METRIC_INNER_PRODUCT)
        hnsw.hnsw.efConstruction = self.ef_construction
        return self.faiss.IndexIDMap2(hnsw)

    def _writable(self) -> None:
        if self.read_only:
            raise LmsmithError(f"the vector store at {self.path} is read-only (a registered index version)",
                               "index again to make a new version")

    # --- writing
    def upsert(self, points: list[Point]) -> None:
        self._writable()
        if not points:
            return
        vecs = np.ascontiguousarray(np.stack([p.vector for p in points]).astype(np.float32))
        if vecs.shape[1] != self.dim:
            raise LmsmithError(f"vectors are {vecs.shape[1]}-d but the store holds {self.dim}-d vectors")
        with self.lock, self.db:
            self.db.executemany("DELETE FROM chunks WHERE id = ?", [(p.id,) for p in points])
            keys = []
            for p, v in zip(points, vecs):
                cur = self.db.execute("INSERT INTO chunks (id, text, metadata, vector) VALUES (?, ?, ?, ?)",
                                      (p.id, p.text, json.dumps(p.metadata, ensure_ascii=False), v.tobytes()))
                keys.append(cur.lastrowid)
            self.index.add_with_ids(vecs, np.asarray(keys, np.int64))
        self._maybe_compact()

    def delete(self, ids: list[str]) -> None:
        self._writable()
        with self.lock, self.db:
            for s in range(0, len(ids), 500):
                part = ids[s:s + 500]
                self.db.execute(f"DELETE FROM chunks WHERE id IN ({','.join('?' * len(part))})", part)
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        live = self.count()
        if self.index.ntotal > 1000 and self.index.ntotal - live > self.index.ntotal // 4:
            self.compact()

    def compact(self) -> None:
        """Rebuild the HNSW graph from the live rows (drops tombstones)."""
        with self.lock:
            index = self._new_index()
            for keys, vecs in self._vectors_batches():
                index.add_with_ids(vecs, keys)
            self.index = index

    def _vectors_batches(self, batch: int = 20_000, where: str = "", params: tuple = ()) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        cur = self.db.execute(f"SELECT key, vector FROM chunks {where} ORDER BY key", params)
        while rows := cur.fetchmany(batch):
            yield (np.fromiter((r[0] for r in rows), np.int64, len(rows)),
                   np.frombuffer(b"".join(r[1] for r in rows), np.float32).reshape(len(rows), self.dim))

    def flush(self) -> None:
        if self.read_only:
            return
        with self.lock:
            self.db.commit()
            tmp = self.path / f"{self.ANN}.tmp-{os.getpid()}"
            self.faiss.write_index(self.index, str(tmp))
            os.replace(tmp, self.path / self.ANN)

    def close(self) -> None:
        self.flush()
        self.db.close()

    # --- reading
    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM chunks").fetchone()[0])

    def _where(self, filter: dict[str, Any] | None) -> tuple[str, tuple]:
        f = check_filter(filter)
        if not f:
            return "", ()
        clause = " AND ".join("json_extract(metadata, ?) = ?" for _ in f)
        params: list[Any] = []
        for k, v in f.items():
            params += [f'$."{k}"', int(v) if isinstance(v, bool) else v]
        return f"WHERE {clause}", tuple(params)

    def _rows(self, keys: list[int]) -> dict[int, tuple[str, str, str]]:
        if not keys:
            return {}
        rows = self.db.execute(f"SELECT key, id, text, metadata FROM chunks WHERE key IN ({','.join('?' * len(keys))})",
                               keys).fetchall()
        return {r[0]: (r[1], r[2], r[3]) for r in rows}

    def _hits(self, keys: list[int], scores: list[float], k: int) -> list[Hit]:
        rows = self._rows([int(x) for x in keys if x >= 0])
        hits = []
        for key, s in zip(keys, scores):
            if key in rows:  # a missing key is a tombstone
                cid, text, meta = rows[key]
                hits.append(Hit(cid, float(s), text, json.loads(meta)))
                if len(hits) == k:
                    break
        return hits

    @contextlib.contextmanager
    def _one_thread(self):
        """One query is one thread's work: an OpenMP team only adds wake-up latency (ms on a busy machine)."""
        n = self.faiss.omp_get_max_threads()
        self.faiss.omp_set_num_threads(1)
        try:
            yield
        finally:
            self.faiss.omp_set_num_threads(n)

    def search(self, vector: np.ndarray, k: int, filter: dict[str, Any] | None = None) -> list[Hit]:
        filter = check_filter(filter)
        q = np.ascontiguousarray(np.asarray(vector, np.float32).reshape(1, -1))
        if q.shape[1] != self.dim:
            raise LmsmithError(f"the query vector is {q.shape[1]}-d but the store holds {self.dim}-d vectors")
        with self.lock, self._one_thread():
            ntotal = self.index.ntotal
            if ntotal == 0 or k <= 0:
                return []
            if filter:
                return self._filtered_search(q, k, filter)
            live = self.count()
            want = min(ntotal, k + (ntotal - live) * k // max(live, 1) + (k if ntotal > live else 0))
            params = self.faiss.SearchParametersHNSW(efSearch=max(self.ef_search, want))
            scores, keys = self.index.search(q, want, params=params)
            return self._hits(keys[0].tolist(), scores[0].tolist(), k)

    def _filtered_search(self, q: np.ndarray, k: int, filter: dict[str, Any]) -> list[Hit]:
        where, params = self._where(filter)
        keys = np.array([r[0] for r in self.db.execute(f"SELECT key FROM chunks {where}", params)], np.int64)
        if len(keys) == 0:
            return []
        if len(keys) > EXACT_FILTER_MAX:  # a broad filter: HNSW restricted to the matching keys
            sel = self.faiss.IDSelectorBatch(keys)
            ef = max(self.ef_search, int(k * self.index.ntotal / len(keys)))
            scores, found = self.index.search(q, k, params=self.faiss.SearchParametersHNSW(sel=sel, efSearch=ef))
            hits = self._hits(found[0].tolist(), scores[0].tolist(), k)
            if len(hits) == k:
                return hits
        best: list[tuple[float, int]] = []  # a narrow filter (or HNSW came up short): exact over the matches
        for bkeys, vecs in self._vectors_batches(where=where, params=params):
            s = vecs @ q[0]
            top = np.argsort(-s)[:k]
            best += [(float(s[i]), int(bkeys[i])) for i in top]
        best.sort(key=lambda t: -t[0])
        best = best[:k]
        return self._hits([b[1] for b in best], [b[0] for b in best], k)

    def keyword_search(self, query: str, k: int, filter: dict[str, Any] | None = None) -> list[Hit]:
        filter = check_filter(filter)
        match = fts_query(query)
        if not match or k <= 0:
            return []
        where, params = self._where(filter)
        extra = where.replace("WHERE", "AND") if where else ""
        sql = (f"SELECT c.id, c.text, c.metadata, -bm25(chunks_fts) AS s FROM chunks_fts JOIN chunks c "
               f"ON c.key = chunks_fts.rowid WHERE chunks_fts MATCH ? {extra} ORDER BY s DESC LIMIT ?")
        with self.lock:
            rows = self.db.execute(sql, (match, *params, k)).fetchall()
        return [Hit(r[0], float(r[3]), r[1], json.loads(r[2])) for r in rows]

    def scan(self, batch: int = 1000) -> Iterator[list[Point]]:
        cur = self.db.execute("SELECT id, text, metadata, vector FROM chunks ORDER BY key")
        while rows := cur.fetchmany(batch):
            yield [Point(r[0], np.frombuffer(r[3], np.float32).copy(), r[1], json.loads(r[2])) for r in rows]

    def ids(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT id FROM chunks")}


# ------------------------------------------------------------------------------------------ qdrant
BM25_K1, BM25_B, BM25_AVG_LEN = 1.2, 0.75, 150.0
SPARSE = "bm25"
_CLIENTS: dict[str, Any] = {}
_CLIENTS_LOCK = threading.Lock()


def term_id(word: str) -> int:
    return int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")


def bm25_doc_vector(text: str) -> tuple[list[int], list[float]]:
    """BM25 term weights of a document (the IDF part is applied by Qdrant's IDF modifier at query time)."""
    words = [w.lower() for w in WORD_RE.findall(text)]
    tf: dict[int, int] = {}
    for w in words:
        tf[term_id(w)] = tf.get(term_id(w), 0) + 1
    norm = BM25_K1 * (1 - BM25_B + BM25_B * len(words) / BM25_AVG_LEN)
    ids = sorted(tf)
    return ids, [tf[i] * (BM25_K1 + 1) / (tf[i] + norm) for i in ids]


def _close_clients() -> None:
    with _CLIENTS_LOCK:
        for c in _CLIENTS.values():
            try:
                c.close()
            except Exception:  # best effort at exit
                pass
        _CLIENTS.clear()


atexit.register(_close_clients)


def qdrant_client(url: str):
    """One client per URL in this process (local mode allows one client per directory)."""
    from qdrant_client import QdrantClient

    with _CLIENTS_LOCK:
        if url not in _CLIENTS:
            if url.startswith("qdrant+path://"):
                _CLIENTS[url] = QdrantClient(path=url[len("qdrant+path://"):])
            elif url.startswith("qdrant+memory://"):  # qdrant+memory://NAME: in-process, gone at exit
                _CLIENTS[url] = QdrantClient(":memory:")
            else:
                _CLIENTS[url] = QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY"), timeout=60)
        return _CLIENTS[url]


class QdrantStore:
    """A Qdrant collection (server, cluster or local mode) with dense + BM25 sparse vectors and payloads."""

    def __init__(self, url: str, collection: str, dim: int | None = None, create: bool = False,
                 shards: int | None = None, replicas: int | None = None):
        from qdrant_client import models

        self.m = models
        self.url, self.collection = url, collection
        try:
            self.client = qdrant_client(url)
            exists = self.client.collection_exists(collection)
        except Exception as e:  # connection refused, bad URL, auth: one line
            raise LmsmithError(f"cannot reach Qdrant at {url}: {str(e).splitlines()[0][:200]}",
                               "check the URL (http://host:6333) and that the server runs; QDRANT_API_KEY for auth") from None
        if not exists:
            if not create:
                raise LmsmithError(f"Qdrant at {url} has no collection '{collection}'",
                                   "the index was removed from the server; index again")
            if not dim:
                raise LmsmithError("creating a Qdrant collection needs the vector dimension")
            self.client.create_collection(
                collection, vectors_config=models.VectorParams(size=int(dim), distance=models.Distance.COSINE),
                sparse_vectors_config={SPARSE: models.SparseVectorParams(modifier=models.Modifier.IDF)},
                shard_number=shards, replication_factor=replicas)
        info = self.client.get_collection(collection)
        self.dim = int(info.config.params.vectors.size)

    @staticmethod
    def point_id(chunk_id: str) -> str:
        return str(uuid.uuid5(uuid.NAMESPACE_URL, chunk_id))

    def upsert(self, points: list[Point]) -> None:
        m = self.m
        structs = []
        for p in points:
            ids, vals = bm25_doc_vector(p.text)
            structs.append(m.PointStruct(id=self.point_id(p.id),
                                         vector={"": np.asarray(p.vector, np.float32).tolist(),
                                                 SPARSE: m.SparseVector(indices=ids, values=vals)},
                                         payload={"chunk_id": p.id, "text": p.text, "metadata": p.metadata}))
        for s in range(0, len(structs), 256):
            self.client.upsert(self.collection, structs[s:s + 256], wait=True)

    def delete(self, ids: list[str]) -> None:
        if ids:
            self.client.delete(self.collection, self.m.PointIdsList(points=[self.point_id(i) for i in ids]), wait=True)

    def _filter(self, filter: dict[str, Any] | None):
        f = check_filter(filter)
        if not f:
            return None
        return self.m.Filter(must=[self.m.FieldCondition(key=f"metadata.{k}", match=self.m.MatchValue(value=v))
                                   for k, v in f.items()])

    def _hit(self, p) -> Hit:
        return Hit(p.payload["chunk_id"], float(p.score), p.payload["text"], p.payload.get("metadata") or {})

    def search(self, vector: np.ndarray, k: int, filter: dict[str, Any] | None = None) -> list[Hit]:
        res = self.client.query_points(self.collection, query=np.asarray(vector, np.float32).tolist(), using="",
                                       limit=k, query_filter=self._filter(filter), with_payload=True)
        return [self._hit(p) for p in res.points]

    def keyword_search(self, query: str, k: int, filter: dict[str, Any] | None = None) -> list[Hit]:
        words = list(dict.fromkeys(w.lower() for w in WORD_RE.findall(query)))
        if not words:
            return []
        ids = sorted({term_id(w) for w in words})
        res = self.client.query_points(self.collection, query=self.m.SparseVector(indices=ids, values=[1.0] * len(ids)),
                                       using=SPARSE, limit=k, query_filter=self._filter(filter), with_payload=True)
        return [self._hit(p) for p in res.points]

    def count(self) -> int:
        return int(self.client.count(self.collection, exact=True).count)

    def scan(self, batch: int = 1000) -> Iterator[list[Point]]:
        offset = None
        while True:
            pts, offset = self.client.scroll(self.collection, limit=batch, offset=offset, with_payload=True,
                                             with_vectors=[""])
            if pts:
                yield [Point(p.payload["chunk_id"], np.asarray(p.vector[""] if isinstance(p.vector, dict) else p.vector,
                                                               np.float32), p.payload["text"], p.payload.get("metadata") or {})
                       for p in pts]
            if offset is None:
                return

    def ids(self) -> set[str]:
        return {p.id for batch in self.scan() for p in batch}

    def flush(self) -> None:
        pass

    def close(self) -> None:
        pass

    def drop(self) -> None:
        self.client.delete_collection(self.collection)


def is_qdrant_url(url: str | None) -> bool:
    return bool(url) and url.startswith(("http://", "https://", "qdrant+path://", "qdrant+memory://"))
