"""Vector search for `lmsmith rag`: ANN recall@10 against exact search, query latency and build time.

Vectors are synthetic and MiniLM-sized (dim 384, L2-normalized, inner product): points of a Gaussian
mixture in a 48-dimensional latent space projected to 384 dimensions plus isotropic noise, so that, like
real sentence embeddings, they have low intrinsic dimension and cluster by topic. Queries come from the
same distribution (held out). Exact top-10 comes from FAISS flat (brute force), the peer measured in the
same run. Latency is one query at a time (what a RAG request does), after a warm-up, FAISS with one OpenMP
thread (a team of threads per single query only adds wake-up latency, milliseconds on a busy machine).

    python -m bench.rag.rag --n 100000 --candidates all         # choose the embedded default
    python -m bench.rag.rag --n 100000,1000000 --candidates default,faiss-flat

Candidates: faiss-flat, faiss-hnsw, usearch (HNSW, f32), usearch-i8, sqlite-vec (vec0, brute force),
qdrant-local (qdrant-client's local mode), lancedb (IVF_HNSW_SQ), default (the store `lmsmith rag` ships:
lmsmith.rag.store.EmbeddedStore, through its own search call, metadata lookup included).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench._result import make_result, write_result
from bench.common import RESULTS

DIM = 384


def synth(n: int, nq: int, seed: int = 0, latent: int = 48, clusters: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    proj = rng.standard_normal((latent, DIM)).astype(np.float32) / np.sqrt(latent)
    centers = rng.standard_normal((clusters, latent)).astype(np.float32)

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, DIM), np.float32)
        for s in range(0, m, 100_000):
            k = min(100_000, m - s)
            z = centers[rng.integers(0, clusters, k)] + 0.6 * rng.standard_normal((k, latent)).astype(np.float32)
            x = z @ proj + 0.08 * rng.standard_normal((k, DIM)).astype(np.float32)
            out[s:s + k] = x / np.linalg.norm(x, axis=1, keepdims=True)
        return out

    return draw(n), draw(nq)


def gaussian(n: int, nq: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Worst case for graph indexes: i.i.d. directions on the 384-d sphere (no structure at all)."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n + nq, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x[:n], x[n:]


def exact_topk(x: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    import faiss

    idx = faiss.IndexFlatIP(DIM)
    idx.add(x)
    return idx.search(q, k)[1]


def recall(found: list[list[int]], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len(set(f[:k]) & set(t[:k].tolist())) / k for f, t in zip(found, truth)]))


def timed_queries(search, q: np.ndarray, warmup: int = 20) -> tuple[list[list[int]], np.ndarray]:
    import faiss

    faiss.omp_set_num_threads(1)  # one query at a time: an OpenMP team only adds wake-up latency
    for v in q[:warmup]:
        search(v)
    found, lat = [], []
    for v in q:
        t = time.perf_counter()
        found.append(search(v))
        lat.append(time.perf_counter() - t)
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    return found, np.array(lat) * 1000


# ----------------------------------------------------------------------------- candidates
def c_faiss_flat(x, tmp):
    import faiss

    idx = faiss.IndexFlatIP(DIM)
    idx.add(x)
    return lambda v: idx.search(v[None], 10)[1][0].tolist()


def c_faiss_hnsw(x, tmp, m=32, ef_c=80, ef_s=64):
    import faiss

    idx = faiss.IndexHNSWFlat(DIM, m, faiss.METRIC_INNER_PRODUCT)
    idx.hnsw.efConstruction = ef_c
    idx.add(x)
    idx.hnsw.efSearch = ef_s
    return lambda v: idx.search(v[None], 10)[1][0].tolist()


def c_usearch(x, tmp, dtype="f32"):
    from usearch.index import Index

    idx = Index(ndim=DIM, metric="ip", dtype=dtype, connectivity=16, expansion_add=128, expansion_search=64)
    idx.add(np.arange(len(x), dtype=np.uint64), x, threads=os.cpu_count() or 1)
    return lambda v: idx.search(v, 10).keys.tolist()


def c_usearch_i8(x, tmp):
    return c_usearch(x, tmp, "i8")


def c_sqlite_vec(x, tmp):
    try:  # the stdlib sqlite3 here is built without load_extension; pysqlite3-binary has it
        import pysqlite3 as sqlite3
    except ImportError:
        import sqlite3
    import sqlite_vec

    db = sqlite3.connect(str(Path(tmp) / "vec.db"))
    db.enable_load_extension(True)
    sqlite_vec.load(db)
    db.execute(f"CREATE VIRTUAL TABLE v USING vec0(embedding float[{DIM}] distance_metric=cosine)")
    with db:
        db.executemany("INSERT INTO v(rowid, embedding) VALUES (?, ?)", ((i, x[i].tobytes()) for i in range(len(x))))

    def search(v):
        rows = db.execute("SELECT rowid FROM v WHERE embedding MATCH ? AND k = 10 ORDER BY distance", (v.tobytes(),))
        return [r[0] for r in rows]

    return search


def c_qdrant_local(x, tmp):
    from qdrant_client import QdrantClient, models

    client = QdrantClient(":memory:")  # local mode's search is the same numpy code in memory or on disk
    client.create_collection("b", vectors_config=models.VectorParams(size=DIM, distance=models.Distance.DOT))
    for s in range(0, len(x), 5000):
        client.upload_collection("b", vectors=x[s:s + 5000], ids=list(range(s, min(s + 5000, len(x)))))

    def search(v):
        return [p.id for p in client.query_points("b", query=v.tolist(), limit=10).points]

    return search


def c_lancedb(x, tmp):
    import lancedb
    import pyarrow as pa

    db = lancedb.connect(str(Path(tmp) / "lance"))
    table = pa.table({"id": pa.array(np.arange(len(x))), "vector": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), DIM)})
    t = db.create_table("b", table)
    t.create_index(metric="dot", vector_column_name="vector", index_type="IVF_HNSW_SQ",
                   num_partitions=max(1, len(x) // 50_000))

    def search(v):
        return t.search(v).metric("dot").limit(10).select(["id"]).to_arrow()["id"].to_pylist()

    return search


def c_default(x, tmp):
    from lmsmith.rag.store import EmbeddedStore, Point

    store = EmbeddedStore(Path(tmp) / "lmsmith-store", dim=DIM)
    for s in range(0, len(x), 20_000):
        e = min(s + 20_000, len(x))
        store.upsert([Point(id=f"c{i}", vector=x[i], text="", metadata={"doc_id": f"d{i}"}) for i in range(s, e)])
    store.flush()

    def search(v):
        return [int(h.id[1:]) for h in store.search(v, 10)]

    return search


CANDIDATES = {"faiss-flat": c_faiss_flat, "faiss-hnsw": c_faiss_hnsw, "usearch": c_usearch, "usearch-i8": c_usearch_i8,
              "sqlite-vec": c_sqlite_vec, "qdrant-local": c_qdrant_local, "lancedb": c_lancedb, "default": c_default}


def save(args: argparse.Namespace, metrics: dict[str, float], final: bool = False) -> None:
    import json

    notes = json.loads(Path(args.out).read_text()).get("notes", []) if args.merge and Path(args.out).exists() else []
    notes = [n for n in notes if not n.startswith("(partial)")]
    uptime = os.popen("uptime").read().strip()
    notes.append(f"{'' if final else '(partial) '}{uptime} after: --n {args.n} --data {args.data} --candidates {args.candidates}")
    res = make_result("rag", metrics, extra_versions=("faiss-cpu", "usearch", "sqlite-vec", "qdrant-client", "lancedb"),
                      data="synthetic clustered vectors, dim 384, L2-normalized (48-d latent Gaussian mixture, "
                           "2000 clusters, projected + noise); keys ending -gaussian: i.i.d. directions on the "
                           "sphere (worst case); queries held out from the same distribution",
                      uptime=uptime, notes=notes)
    write_result(args.out, res, echo=final)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", default="100000", help="comma-separated corpus sizes")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--candidates", default="all", help=f"comma-separated: {', '.join(CANDIDATES)} or all")
    ap.add_argument("--data", default="clustered", choices=["clustered", "gaussian"],
                    help="clustered (like sentence embeddings; the default) or gaussian (worst case, keys get a -gaussian suffix)")
    ap.add_argument("--out", default=str(RESULTS / "rag.json"))
    ap.add_argument("--merge", action="store_true", help="add to the metrics already in --out instead of replacing")
    args = ap.parse_args()
    names = list(CANDIDATES) if args.candidates == "all" else args.candidates.split(",")
    import json

    metrics: dict[str, float] = {}
    if args.merge and Path(args.out).exists():
        metrics = json.loads(Path(args.out).read_text())["metrics"]
    metrics[f"load_avg_1m_start/{args.n}-{args.data}"] = os.getloadavg()[0]
    for n in [int(s) for s in args.n.split(",")]:
        x, q = (synth if args.data == "clustered" else gaussian)(n, args.queries, seed=n)
        truth = exact_topk(x, q, 10)
        tag = (f"{n // 1000}k" if n < 1_000_000 else f"{n // 1_000_000}M") + ("" if args.data == "clustered" else "-gaussian")
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                try:
                    search = CANDIDATES[name](x, tmp)
                except (ImportError, AttributeError) as e:  # sqlite-vec needs sqlite3 built with load_extension
                    print(f"skip {name}: {e}", file=sys.stderr)
                    metrics[f"{name}/{tag}/unavailable"] = 1
                    continue
                build = time.perf_counter() - t0
                found, lat = timed_queries(search, q)
                r = recall(found, truth, 10)
                key = f"{name}/{tag}"
                metrics.update({f"{key}/recall@10": round(r, 4), f"{key}/p50_ms": round(float(np.percentile(lat, 50)), 3),
                                f"{key}/p99_ms": round(float(np.percentile(lat, 99)), 3), f"{key}/build_s": round(build, 2)})
                print(f"{key:24s} recall@10 {r:.4f}  p50 {np.percentile(lat, 50):7.3f} ms  "
                      f"p99 {np.percentile(lat, 99):7.3f} ms  build {build:7.1f} s  (load {os.getloadavg()[0]:.2f})",
                      file=sys.stderr, flush=True)
                del search
                gc.collect()
                save(args, metrics)  # after every candidate: a long run killed midway keeps what it measured
    metrics[f"load_avg_1m_end/{args.n}-{args.data}"] = os.getloadavg()[0]
    save(args, metrics, final=True)


if __name__ == "__main__":
    main()
