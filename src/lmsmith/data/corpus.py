"""Text corpora -> a tokenized, memory-mapped token file + document index, cached on disk.

Inputs: `.txt` (documents separated by a blank line), `.jsonl` (a `text` field per record) and `.parquet`
(a `text` column), each optionally `.gz` or `.zst`; given as files, globs or directories (a directory is
read like the output of `lmsmith data clean`: its data files, skipping `manifest.json`).

The corpus is tokenized once (in worker processes, with a progress bar) into
`$LMSMITH_HOME/cache/tokens/<key>/` holding `tokens.bin` (raw uint16/uint32, EOS after each document),
`doc_starts.npy` and `meta.json`. The key hashes the files' contents and the tokenizer, so the same data
with the same tokenizer is never tokenized twice, and a corpus larger than RAM streams from the memmap.
"""

from __future__ import annotations

import glob
import hashlib
import json
import multiprocessing as mp
import os
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np

from lmsmith.data.chat import iter_jsonl, open_text
from lmsmith.errors import LmsmithError
from lmsmith.home import lmsmith_home
from lmsmith.progress import console, task
from lmsmith.registry.store import sha256_file as file_sha256

TEXT_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
COMPRESSED = (".gz", ".zst")
FORMAT_VERSION = 1
BATCH_DOCS = 256
PARALLEL_MIN_BYTES = 2_000_000  # below this, starting worker processes costs more than it saves


def data_format(path: Path) -> str:
    name = path.name.lower()
    for c in COMPRESSED:
        if name.endswith(c):
            name = name[: -len(c)]
    for s in TEXT_SUFFIXES:
        if name.endswith(s):
            return "jsonl" if s == ".json" else s[1:]
    raise LmsmithError(f"unsupported data file type: {path.name}",
                       "use .txt, .jsonl or .parquet (optionally .gz/.zst)")


def resolve_files(specs: Iterable[str]) -> list[Path]:
    """Expand files, globs and directories into a sorted, de-duplicated list of readable data files."""
    files: list[Path] = []
    for spec in specs:
        p = Path(spec).expanduser()
        if p.is_dir() and (p / "manifest.json").is_file():
            files += manifest_shards(p)
        elif p.is_dir():
            found = [q for q in sorted(p.rglob("*")) if q.is_file() and q.name != "manifest.json"
                     and not q.name.startswith(".") and _is_data(q)]
            if not found:
                raise LmsmithError(f"directory {p} contains no data files", "expected *.txt, *.jsonl or *.parquet (optionally .gz/.zst)")
            files += found
        elif any(ch in spec for ch in "*?["):
            found = [Path(q) for q in sorted(glob.glob(os.path.expanduser(spec), recursive=True)) if Path(q).is_file()]
            if not found:
                raise LmsmithError(f"no files match {spec}")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise LmsmithError(f"data file not found: {p}", "check the path given to --data")
    out: list[Path] = []
    for f in files:
        data_format(f)  # unsupported types are an error now, not after an hour of tokenizing
        if not os.access(f, os.R_OK):
            raise LmsmithError(f"data file is not readable: {f}", "check its permissions")
        if f not in out:
            out.append(f)
    if not out:
        raise LmsmithError("no data files given", "pass --data FILE|GLOB|DIR")
    return out


def manifest_shards(d: Path) -> list[Path]:
    """The shards a `lmsmith data clean` output lists in its manifest: never its report or other files."""
    try:
        manifest = json.loads((d / "manifest.json").read_text())
        shards = [d / s["path"] for s in manifest["shards"]]
    except (ValueError, KeyError, TypeError) as e:
        raise LmsmithError(f"{d / 'manifest.json'} is not a `lmsmith data clean` manifest ({e})",
                           "pass the data files themselves, or re-run `lmsmith data clean`") from None
    missing = [s for s in shards if not s.is_file()]
    if missing:
        raise LmsmithError(f"{d} lists {len(missing)} shard(s) that are missing, e.g. {missing[0].name}",
                           "the cleaned corpus is incomplete: re-run the same `lmsmith data clean` command to finish it")
    if not shards:
        raise LmsmithError(f"{d / 'manifest.json'} lists no shards", "the cleaning kept no documents; check report.md")
    return shards


def text_bytes(path: Path) -> int:
    """The bytes of text a file holds once decompressed (what tokenizing counts), cheaply: gzip stores
    it in its last 4 bytes (mod 4 GiB), zstd in its frame header when known; else an estimate."""
    size = path.stat().st_size
    name = path.name.lower()
    try:
        if name.endswith(".gz") and size >= 18:
            with open(path, "rb") as f:
                f.seek(-4, os.SEEK_END)
                isize = int.from_bytes(f.read(4), "little")
            return isize if isize >= size else 4 * size
        if name.endswith(".zst"):
            import zstandard

            with open(path, "rb") as f:
                n = zstandard.frame_content_size(f.read(18))
            return n if n > 0 else 4 * size
    except (OSError, ValueError, ImportError):
        pass
    return size


def _is_data(p: Path) -> bool:
    try:
        data_format(p)
        return True
    except LmsmithError:
        return False



def tokenizer_hash(tokenizer: Any) -> str:
    """Identify a tokenizer by what decides its output (vocabulary, merges, normalizer, specials)."""
    h = hashlib.sha256()
    backend = getattr(tokenizer, "backend_tokenizer", None)
    h.update(backend.to_str().encode() if backend is not None else json.dumps(tokenizer.get_vocab(), sort_keys=True).encode())
    h.update(str(tokenizer.eos_token_id).encode())
    return h.hexdigest()


def iter_documents(path: Path, skip_bad_lines: bool = False, stats: dict | None = None) -> Iterator[str]:
    """Yield the documents of one file (validated as read: bad JSONL is reported as file:line)."""
    fmt = data_format(path)
    stats = stats if stats is not None else {}
    stats.setdefault("bad_lines", 0)
    if fmt == "txt":
        try:
            with open_text(path) as f:
                buf: list[str] = []
                for line in f:
                    if line.strip():
                        buf.append(line)
                    elif buf:
                        yield "".join(buf).strip("\n")
                        buf = []
                if buf:
                    yield "".join(buf).strip("\n")
        except UnicodeDecodeError:
            raise LmsmithError(f"{path} is not UTF-8 text") from None
        except (OSError, EOFError) as e:
            raise LmsmithError(f"cannot read {path}: {e}") from None
    elif fmt == "jsonl":
        for n, obj in iter_jsonl(path, skip_bad_lines, stats):
            text = obj.get("text") if isinstance(obj, dict) else None
            if not isinstance(text, str):
                if skip_bad_lines:
                    stats["bad_lines"] += 1
                    continue
                raise LmsmithError(f"{path}:{n}: record has no string 'text' field",
                                   "pretraining JSONL needs {\"text\": ...} per line (or pass --skip-bad-lines)")
            if text:
                yield text
    else:
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise LmsmithError(f"{path} is Parquet but pyarrow is not installed", "pip install pyarrow") from None
        pf = pq.ParquetFile(path)
        if "text" not in pf.schema_arrow.names:
            raise LmsmithError(f"{path} has no 'text' column", f"its columns: {', '.join(pf.schema_arrow.names)}")
        for batch in pf.iter_batches(columns=["text"]):
            for text in batch.column(0).to_pylist():
                if text:
                    yield text


@dataclass
class TokenCorpus:
    """A tokenized corpus: one flat token stream (EOS after each document) and where documents start."""

    dir: Path
    tokens: np.ndarray  # memmap
    doc_starts: np.ndarray
    meta: dict[str, Any]

    @property
    def n_tokens(self) -> int:
        return int(len(self.tokens))

    @property
    def n_docs(self) -> int:
        return int(len(self.doc_starts))

    @classmethod
    def open(cls, d: Path) -> "TokenCorpus":
        meta = json.loads((d / "meta.json").read_text())
        tokens = np.memmap(d / "tokens.bin", dtype=np.dtype(meta["dtype"]), mode="r", shape=(meta["n_tokens"],))
        return cls(d, tokens, np.load(d / "doc_starts.npy"), meta)


_WORKER_TOKENIZER: Any = None


def _init_worker(tok: Any) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tok


def _encode_batch(texts: list[str]) -> list[list[int]]:
    return _WORKER_TOKENIZER(texts, add_special_tokens=False)["input_ids"]


def encode_texts(tokenizer: Any, texts: list[str]) -> list[list[int]]:
    """One batch on a Ray worker (the tokenizer arrives once through Ray's object store)."""
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def _batches(files: list[Path], skip_bad_lines: bool, stats: dict) -> Iterator[tuple[list[str], int]]:
    buf: list[str] = []
    size = 0
    for f in files:
        for doc in iter_documents(f, skip_bad_lines, stats):
            buf.append(doc)
            size += len(doc.encode("utf-8", "ignore"))
            if len(buf) >= BATCH_DOCS:
                yield buf, size
                buf, size = [], 0
    if buf:
        yield buf, size


def tokenize_corpus(specs: Iterable[str], tokenizer: Any, *, workers: int | None = None, skip_bad_lines: bool = False,
                    cache_root: Path | None = None, quiet: bool = False, executor: str = "local",
                    ray_address: str | None = None, num_cpus: int | None = None) -> TokenCorpus:
    """Tokenize files (or reuse the cached result) and return the memory-mapped corpus. `executor="ray"`
    encodes the batches as Ray tasks; the cache entry (key, bytes) is the same as the local one's."""
    files = resolve_files(specs)
    eos = tokenizer.eos_token_id
    if eos is None:
        raise LmsmithError("the tokenizer has no EOS token, which packing needs between documents")
    hashes = [file_sha256(f) for f in files]
    key = hashlib.sha256(json.dumps([FORMAT_VERSION, hashes, tokenizer_hash(tokenizer), skip_bad_lines]).encode()).hexdigest()[:24]
    root = cache_root or lmsmith_home() / "cache" / "tokens"
    final = root / key
    if (final / "meta.json").is_file():
        corpus = TokenCorpus.open(final)
        if not quiet:
            console.print(f"tokenized corpus cached: {corpus.n_docs} documents, {corpus.n_tokens:,} tokens ({final})")
        return corpus
    vocab = len(tokenizer)
    dtype = np.uint16 if vocab <= np.iinfo(np.uint16).max + 1 else np.uint32
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    stats: dict = {"bad_lines": 0}
    total_bytes = sum(text_bytes(f) for f in files)
    workers = max(1, min(workers or os.cpu_count() or 1, 8))
    if total_bytes < PARALLEL_MIN_BYTES:
        workers = 1
    starts: list[int] = []
    n = 0
    bar_done = [0]
    try:
        with open(tmp / "tokens.bin", "wb") as out, task("tokenize", total=total_bytes) as bar:
            def consume(ids_batch: list[list[int]], size: int) -> None:
                nonlocal n
                for ids in ids_batch:
                    starts.append(n)
                    arr = np.asarray(ids + [eos], dtype=dtype)
                    out.write(arr.tobytes())
                    n += len(arr)
                bar(size, info=f"{n:,} tokens", total=max(total_bytes, bar_done[0] + size))
                bar_done[0] += size

            if executor == "ray":
                import ray

                from lmsmith.data import ray_executor

                ray_executor.connect(ray_address, num_cpus)
                tok_ref = ray.put(tokenizer)
                sizes_r: list[int] = []

                def batches_r() -> Iterator[tuple]:
                    for texts, size in _batches(files, skip_bad_lines, stats):
                        sizes_r.append(size)
                        yield (tok_ref, texts)

                for i, ids_batch in enumerate(ray_executor.ordered_map(
                        encode_texts, batches_r(), max_in_flight=2 * ray_executor.cluster_cpus())):
                    consume(ids_batch, sizes_r[i])
            elif workers == 1:
                _init_worker(tokenizer)
                for texts, size in _batches(files, skip_bad_lines, stats):
                    consume(_encode_batch(texts), size)
            else:
                ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
                sizes: list[int] = []

                def texts_only() -> Iterator[list[str]]:
                    for texts, size in _batches(files, skip_bad_lines, stats):
                        sizes.append(size)
                        yield texts

                with ctx.Pool(workers, initializer=_init_worker, initargs=(tokenizer,)) as pool:
                    for i, ids_batch in enumerate(pool.imap(_encode_batch, texts_only(), chunksize=1)):
                        consume(ids_batch, sizes[i])
        if n == 0:
            raise LmsmithError("the corpus is empty: the data files contain no text",
                               f"files: {', '.join(str(f) for f in files[:3])}{' ...' if len(files) > 3 else ''}")
        np.save(tmp / "doc_starts.npy", np.asarray(starts, dtype=np.int64))
        meta = {"n_tokens": n, "n_docs": len(starts), "dtype": np.dtype(dtype).name, "eos": eos,
                "files": [{"path": str(f), "sha256": h, "size": f.stat().st_size} for f, h in zip(files, hashes)],
                "bad_lines": stats["bad_lines"], "tokenizer_sha256": tokenizer_hash(tokenizer)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        try:
            os.rename(tmp, final)  # atomic: a cache entry is whole or absent
        except OSError:  # another process finished the same corpus first
            shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    corpus = TokenCorpus.open(final)
    if not quiet:
        msg = f"tokenized {len(files)} file(s): {corpus.n_docs} documents, {corpus.n_tokens:,} tokens"
        if stats["bad_lines"]:
            msg += f", skipped {stats['bad_lines']} bad line(s)"
        console.print(msg)
    return corpus
