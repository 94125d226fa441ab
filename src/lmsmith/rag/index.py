"""An index is a registry artifact (kind=index): `index.json` (embedder, chunking, backend, one content hash
per document) plus, for the embedded backend, the store's files. Each `lmsmith rag index` run that changes
something registers a new version, so `KB@3` is the index exactly as it was at version 3.

Feature-store rule: the vectors and the model that made them stay paired. An index records its embedder's
ref and weight fingerprint; indexing or querying it with another embedder is refused.

Incremental: a document whose content hash is unchanged keeps its chunks and vectors; new and changed
documents are (re-)chunked and embedded; documents gone from the sources are deleted.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from lmsmith.errors import LmsmithError
from lmsmith.progress import console, task
from lmsmith.rag.docs import Document, chunk_text, read_documents, token_splitter
from lmsmith.rag.embed import Embedder, get_embedder
from lmsmith.rag.store import EmbeddedStore, Hit, Point, QdrantStore, hybrid, is_qdrant_url
from lmsmith.registry.registry import DataRef, Lineage, ModelVersion, Registry
from lmsmith.registry.store import sha256_file

MANIFEST = "index.json"
STORE_DIR = "store"
EMBED_BATCH = 256  # chunks embedded and written per step


class DocEntry(BaseModel):
    hash: str
    chunks: int
    source: str = ""


class Manifest(BaseModel):
    format: int = 1
    name: str
    embedder: dict[str, Any]
    chunking: dict[str, int]
    backend: dict[str, Any] = Field(default_factory=lambda: {"type": "embedded"})
    documents: dict[str, DocEntry] = Field(default_factory=dict)

    @property
    def chunks(self) -> int:
        return sum(d.chunks for d in self.documents.values())


@dataclass
class IndexStats:
    added: int = 0
    changed: int = 0
    removed: int = 0
    unchanged: int = 0
    chunks_embedded: int = 0
    created: bool = True  # False when nothing changed (no new version)


def chunk_ids(doc_id: str, n: int) -> list[str]:
    return [f"{doc_id}#{i}" for i in range(n)]


# ------------------------------------------------------------------------------------------ lookup
def get_index(ref: str, registry: Registry | None = None) -> ModelVersion:
    """The registered index version `ref` (`KB`, `KB@3`, `KB@alias`); one clear error otherwise."""
    registry = registry or Registry()
    name = ref.partition("@")[0]
    if name not in registry.names():
        known = [n for n in registry.names() if registry.get(n).kind == "index"]
        raise LmsmithError(f"unknown index '{name}'",
                           f"indexes: {', '.join(known)}" if known else "build one with `lmsmith rag index DOCS --name NAME`")
    mv = registry.get(ref)
    if mv.kind != "index":
        raise LmsmithError(f"{mv.ref} is a {mv.kind}, not an index", "give the --name of an index built by `lmsmith rag index`")
    return mv


def read_manifest(mv: ModelVersion) -> Manifest:
    try:
        return Manifest.model_validate_json((mv.dir / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise LmsmithError(f"{mv.ref} has no readable {MANIFEST}: {e}", "run `lmsmith models verify`") from None


def open_store(manifest: Manifest, mv_dir: Path | None, read_only: bool = True, dim: int | None = None):
    b = manifest.backend
    if b["type"] == "qdrant":
        return QdrantStore(b["url"], b["collection"], dim=dim, create=not read_only)
    if mv_dir is None:
        raise LmsmithError("an embedded store needs its directory")
    return EmbeddedStore(mv_dir / STORE_DIR, dim=dim, read_only=read_only)


def check_embedder(manifest: Manifest, emb: Embedder, what: str) -> None:
    rec = manifest.embedder
    if emb.fingerprint != rec["fingerprint"]:
        raise LmsmithError(
            f"{what} was built with embedder {rec['ref']} (fingerprint {rec['fingerprint'][:12]}), not "
            f"{emb.ref} (fingerprint {emb.fingerprint[:12]}): their vectors are not comparable",
            f"use the index's own embedder (omit --embedder), or build a new index with `lmsmith rag index DOCS "
            f"--name NEW --embedder {emb.ref}`")


# ------------------------------------------------------------------------------------------ building
def build_index(docs_path: str | Path, name: str, *, embedder: str | None = None, chunk_tokens: int | None = None,
                overlap: int = 32, store: str | None = None, command: str | None = None,
                registry: Registry | None = None, device: str | None = None) -> tuple[ModelVersion, IndexStats]:
    """Index (or incrementally re-index) `docs_path` as the next version of `name`."""
    registry = registry or Registry()
    docs, files = read_documents(docs_path)
    prev = get_index(name, registry) if name in registry.names() else None
    old = read_manifest(prev) if prev else None
    if old:
        emb = get_embedder(embedder or old.embedder["ref"], device=device)
        check_embedder(old, emb, f"index {prev.ref}")
        if store and not _same_backend(old.backend, store):
            raise LmsmithError(f"index {prev.ref} lives in {_backend_str(old.backend)}",
                               f"copy it first: `lmsmith rag migrate {name} --to {store}`")
    else:
        emb = get_embedder(embedder, device=device)
    limit = emb.max_tokens - 2  # [CLS]/[SEP] (or BOS) around each chunk
    if chunk_tokens is None:
        chunk_tokens = min(256, limit)  # 256 tokens, or what the embedder reads
    elif chunk_tokens > limit:
        console.print(f"[yellow]--chunk-tokens {chunk_tokens} is more than {emb.ref} reads; using {limit}")
        chunk_tokens = limit
    overlap = min(overlap, chunk_tokens // 2)
    chunking = {"chunk_tokens": chunk_tokens, "overlap": overlap}
    rechunk = old is not None and old.chunking != chunking
    before = old.documents if old else {}
    new_docs = {d.id: d for d in docs}
    todo = [d for d in docs if rechunk or d.id not in before or before[d.id].hash != d.hash]
    removed = [i for i in before if i not in new_docs]
    stats = IndexStats(added=sum(d.id not in before for d in todo), changed=sum(d.id in before for d in todo),
                       removed=len(removed), unchanged=len(docs) - len(todo))
    if prev and not todo and not removed:
        stats.created = False
        return prev, stats
    backend = dict(old.backend) if old else _new_backend(store, name)
    manifest = Manifest(name=name, embedder=emb.info(), chunking=chunking, backend=backend,
                        documents={i: e for i, e in before.items() if i in new_docs and new_docs[i].hash == e.hash
                                   and not rechunk})
    with tempfile.TemporaryDirectory(dir=registry.tmp, prefix="index-") as tmp:
        work = Path(tmp) / "index"
        work.mkdir()
        st = _working_store(old, prev, manifest, work, emb.dim)
        try:
            stale = [c for i in removed + [d.id for d in todo if d.id in before] for c in chunk_ids(i, before[i].chunks)]
            st.delete(stale)
            stats.chunks_embedded = _embed_documents(st, todo, emb, chunking, manifest)
            st.flush()
        finally:
            st.close()
        (work / MANIFEST).write_text(manifest.model_dump_json(indent=1))
        data = [DataRef(path=str(f.resolve()), sha256=sha256_file(f), size=f.stat().st_size) for f in files]
        lineage = Lineage(parent=prev.ref if prev else None, stage="rag-index", command=command, data=data,
                          config={"chunking": chunking, "embedder": emb.ref, "backend": _backend_str(backend)})
        mv = registry.register(work, name, kind="index", base=emb.ref, lineage=lineage,
                               tags={"embedder": emb.ref, "backend": backend["type"]},
                               metrics={"documents": len(manifest.documents), "chunks": manifest.chunks})
    return mv, stats


def _backend_str(b: dict[str, Any]) -> str:
    return f"Qdrant at {b['url']} (collection {b['collection']})" if b["type"] == "qdrant" else "the embedded store"


def _same_backend(b: dict[str, Any], store: str) -> bool:
    return (b["type"] == "embedded" and store == "embedded") or (b["type"] == "qdrant" and b.get("url") == store)


def _new_backend(store: str | None, name: str) -> dict[str, Any]:
    if not store or store == "embedded":
        return {"type": "embedded"}
    if is_qdrant_url(store):
        return {"type": "qdrant", "url": store, "collection": f"lmsmith-{name}-{uuid.uuid4().hex[:8]}"}
    raise LmsmithError(f"unknown --store '{store}'",
                       "use `embedded` (default), http(s)://HOST:6333 for a Qdrant server, or qdrant+path:///DIR")


def _working_store(old: Manifest | None, prev: ModelVersion | None, manifest: Manifest, work: Path, dim: int):
    """A writable copy of the previous version's store (embedded: its files; Qdrant: a new collection)."""
    if manifest.backend["type"] == "embedded":
        if prev is not None:
            (work / STORE_DIR).mkdir()
            for f in (prev.dir / STORE_DIR).iterdir():
                shutil.copyfile(f, work / STORE_DIR / f.name)  # copyfile: registry blobs are read-only
                os.chmod(work / STORE_DIR / f.name, 0o644)
        return EmbeddedStore(work / STORE_DIR, dim=dim)
    if old is not None:  # each version its own collection, so older versions stay queryable
        src = QdrantStore(old.backend["url"], old.backend["collection"])
        manifest.backend = dict(old.backend, collection=f"lmsmith-{manifest.name}-{uuid.uuid4().hex[:8]}")
        dst = QdrantStore(manifest.backend["url"], manifest.backend["collection"], dim=dim, create=True)
        keep = {c for i, e in manifest.documents.items() for c in chunk_ids(i, e.chunks)}
        for batch in src.scan():
            dst.upsert([p for p in batch if p.id in keep])
        return dst
    return QdrantStore(manifest.backend["url"], manifest.backend["collection"], dim=dim, create=True)


def _embed_documents(st, docs: list[Document], emb: Embedder, chunking: dict[str, int], manifest: Manifest) -> int:
    split = token_splitter(emb.tokenizer)
    pending: list[tuple[str, str, dict[str, Any]]] = []
    total = 0

    def write() -> None:
        vecs = emb.embed([t for _, t, _ in pending])
        st.upsert([Point(cid, v, t, m) for (cid, t, m), v in zip(pending, vecs)])
        bar(len(pending))
        pending.clear()

    with task("embed", None) as bar:
        all_chunks = []
        for d in docs:
            chunks = chunk_text(d.text, emb.count_tokens, chunking["chunk_tokens"], chunking["overlap"], split)
            manifest.documents[d.id] = DocEntry(hash=d.hash, chunks=len(chunks), source=d.source)
            all_chunks += [(cid, c, {**d.metadata, "doc_id": d.id}) for cid, c in zip(chunk_ids(d.id, len(chunks)), chunks)]
        bar(0, total=len(all_chunks))
        for item in all_chunks:
            pending.append(item)
            total += 1
            if len(pending) >= EMBED_BATCH:
                write()
        if pending:
            write()
    return total


# ------------------------------------------------------------------------------------------ querying
class Index:
    """A registered index version opened for queries (read-only)."""

    def __init__(self, ref: str, embedder: str | None = None, registry: Registry | None = None,
                 device: str | None = None):
        registry = registry or Registry()
        self.version = get_index(ref, registry)
        self.ref = self.version.ref
        self.manifest = read_manifest(self.version)
        self.embedder = get_embedder(embedder or self.manifest.embedder["ref"], device=device)
        check_embedder(self.manifest, self.embedder, f"index {self.ref}")
        self.store = open_store(self.manifest, self.version.dir, read_only=True)

    def query(self, text: str, k: int = 5, hybrid_search: bool = False, filter: dict[str, Any] | None = None) -> list[Hit]:
        return self.query_many([text], k, hybrid_search, filter)[0]

    def query_many(self, texts: list[str], k: int = 5, hybrid_search: bool = False,
                   filter: dict[str, Any] | None = None) -> list[list[Hit]]:
        if k < 1:
            raise LmsmithError("k must be at least 1")
        vecs = self.embedder.embed(texts)
        out = []
        for text, v in zip(texts, vecs):
            if hybrid_search:
                fetch = max(4 * k, 20)
                out.append(hybrid(self.store.search(v, fetch, filter), self.store.keyword_search(text, fetch, filter), k))
            else:
                out.append(self.store.search(v, k, filter))
        return out


def hit_record(h: Hit) -> dict[str, Any]:
    """The query output contract: `id` is the source document's id."""
    meta = dict(h.metadata)
    doc_id = meta.pop("doc_id", h.id.rsplit("#", 1)[0])
    return {"id": doc_id, "score": round(float(h.score), 6), "text": h.text, "metadata": meta}


def parse_filter(items: list[str] | None) -> dict[str, Any]:
    """`lang=cs` (repeatable, all must match); numbers and true/false are typed, anything else is a string."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise LmsmithError(f"bad --filter '{item}'", "write FIELD=VALUE, e.g. --filter lang=cs")
        try:
            v = json.loads(value)
            if not isinstance(v, (int, float, bool, str)):
                v = value
        except ValueError:
            v = value
        out[key.strip()] = v
    return out


# ------------------------------------------------------------------------------------------ rm / migrate
def remove_index(ref: str, registry: Registry | None = None) -> list[str]:
    """Remove `KB` (every version) or `KB@3`; Qdrant collections of removed versions are dropped."""
    registry = registry or Registry()
    first = get_index(ref, registry)
    versions = [first] if "@" in ref else registry.list(first.name)
    removed = []
    for mv in versions:
        m = read_manifest(mv)
        if m.backend["type"] == "qdrant":
            try:
                QdrantStore(m.backend["url"], m.backend["collection"]).drop()
            except LmsmithError as e:
                console.print(f"[yellow]warning: {e}")
        registry.remove(mv.ref, force=True)
        removed.append(mv.ref)
    return removed


def migrate_index(ref: str, to: str, name: str | None = None, command: str | None = None,
                  registry: Registry | None = None) -> ModelVersion:
    """Copy an index version to another backend (no re-embedding) as a new version of `name` (default: same)."""
    registry = registry or Registry()
    mv = get_index(ref, registry)
    m = read_manifest(mv)
    target = name or mv.name
    if _same_backend(m.backend, to):
        raise LmsmithError(f"{mv.ref} already lives in {_backend_str(m.backend)}")
    if target != mv.name and target in registry.names():
        raise LmsmithError(f"'{target}' already exists", "pick a new --name, or omit it to add a version of the index")
    src = open_store(m, mv.dir, read_only=True)
    backend = _new_backend(to, target)
    new = m.model_copy(update={"backend": backend, "name": target})
    with tempfile.TemporaryDirectory(dir=registry.tmp, prefix="migrate-") as tmp:
        work = Path(tmp) / "index"
        work.mkdir()
        dst = open_store(new, work, read_only=False, dim=int(m.embedder["dim"]))
        try:
            with task(f"migrate {mv.ref}", src.count()) as bar:
                for batch in src.scan():
                    dst.upsert(batch)
                    bar(len(batch))
            dst.flush()
        finally:
            dst.close()
        (work / MANIFEST).write_text(new.model_dump_json(indent=1))
        lineage = Lineage(parent=mv.ref, stage="rag-migrate", command=command, data=mv.lineage.data,
                          config={"from": _backend_str(m.backend), "to": _backend_str(backend)})
        return registry.register(work, target, kind="index", base=mv.base, lineage=lineage,
                                 tags={**mv.tags, "backend": backend["type"]}, metrics=dict(mv.metrics))
