"""Runs a generator over input records chunk by chunk: cached calls, atomic per-chunk parts, final output.

Order is the input's, always: a chunk's requests go out concurrently but results are placed by index, and
`OUTPUT.parts/NNNNNN.json` is written (temp file + rename) only for a chunk whose calls all succeeded. A rerun
reuses finished parts, answers the rest from the cache and asks the model only what was never answered, so a
run killed at any point (SIGKILL included) ends with exactly the bytes of an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Protocol

from lmsmith.data.synth.backends import Reply, Request, SynthBackend, request_key
from lmsmith.data.synth.cache import CallCache
from lmsmith.errors import LmsmithError


@dataclass
class Item:
    source_id: Any
    record: dict[str, Any]


@dataclass
class ChunkResult:
    records: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    steps: Counter = field(default_factory=Counter)  # "step/outcome" -> count
    failed: int = 0  # calls that failed (the chunk is redone on the next run)

    def reject(self, item: Item, step: str, reason: str, **extra: Any) -> None:
        self.rejects.append({"source_id": item.source_id, "step": step, "reason": reason, **extra})
        self.steps[f"{step}/rejected"] += 1

    def to_json(self) -> dict[str, Any]:
        return {"records": self.records, "rejects": self.rejects, "steps": dict(self.steps), "failed": self.failed}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "ChunkResult":
        return cls(d["records"], d["rejects"], Counter(d["steps"]), int(d.get("failed", 0)))


@dataclass
class Counters:
    """What the progress bar and the manifest report. `done`: answered by the model in this run."""

    done: int = 0
    cached: int = 0
    failed: int = 0
    kept: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    sent_prompt_tokens: int = 0
    sent_completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)

    def info(self) -> str:
        return f"done {self.done}  cached {self.cached}  failed {self.failed}  kept {self.kept}"


class Caller:
    """`call_many(requests)` -> replies (or the exception of a call that failed), in request order. Answers
    come from the cache where present; the rest go to the backend at once and are cached as they arrive."""

    def __init__(self, backend: SynthBackend, cache: CallCache, counters: Counters | None = None,
                 on_change: Callable[[], None] | None = None):
        self.backend, self.cache = backend, cache
        self.counters = counters or Counters()
        self.on_change = on_change or (lambda: None)
        self.lock = threading.Lock()

    @property
    def model(self) -> str:
        return self.backend.model

    def call_many(self, requests: list[Request]) -> list[Reply | Exception]:
        keys = [request_key(self.backend.backend_id, self.backend.model, r) for r in requests]
        out: list[Reply | Exception | None] = [None] * len(requests)
        todo: dict[str, list[int]] = {}
        for i, k in enumerate(keys):
            hit = self.cache.get(k)
            if hit is not None:
                out[i] = Reply.from_json(hit, cached=True)
                self._count(out[i])
            else:
                todo.setdefault(k, []).append(i)  # identical calls in one batch are sent once
        if todo:
            firsts = [idx[0] for idx in todo.values()]

            def on_reply(j: int, reply: Reply | Exception) -> None:
                i = firsts[j]
                if isinstance(reply, Reply):
                    self.cache.put(keys[i], reply.to_json())
                for same in todo[keys[i]]:
                    out[same] = reply
                self._count(reply, sent=True)

            self.backend.run([requests[i] for i in firsts], on_reply)
        for i, r in enumerate(out):
            if r is None:  # a backend that forgot one: count it as failed rather than crash later
                out[i] = LmsmithError("the backend returned no answer for this call")
        return out  # type: ignore[return-value]

    def _count(self, reply: Reply | Exception, sent: bool = False) -> None:
        c = self.counters
        with self.lock:
            if isinstance(reply, Exception):
                c.failed += 1
                c.errors[str(reply)[:200]] += 1
            else:
                c.prompt_tokens += reply.prompt_tokens
                c.completion_tokens += reply.completion_tokens
                if sent:
                    c.done += 1
                    c.sent_prompt_tokens += reply.prompt_tokens
                    c.sent_completion_tokens += reply.completion_tokens
                else:
                    c.cached += 1
        self.on_change()


class Generator(Protocol):
    name: str

    def template_hashes(self) -> dict[str, str]: ...

    def process(self, items: list[Item], caller: Caller) -> ChunkResult: ...


# ----------------------------------------------------------------------------- files
def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temp file next to `path`, fsync, rename: readers see the old file or the new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def jsonl_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8")


def read_items(path: str | Path, limit: int | None = None, text_only: bool = False) -> list[Item]:
    """JSONL/JSON (optionally .gz/.zst) records or a .txt file (one record per non-empty line, or per paragraph
    with `text_only`: documents separated by blank lines). `source_id` is the record's `id`, else its line."""
    from lmsmith.data.chat import iter_jsonl, open_text

    p = Path(path).expanduser()
    if not p.is_file():
        raise LmsmithError(f"input file not found: {p}", "pass --input FILE.jsonl")
    items: list[Item] = []
    name = p.name.removesuffix(".gz").removesuffix(".zst")
    if name.endswith(".txt"):
        with open_text(p) as f:
            text = f.read()
        parts = [t.strip() for t in (text.split("\n\n") if text_only else text.splitlines())]
        items = [Item(i, {"text": t}) for i, t in enumerate([t for t in parts if t], 1)]
    elif name.endswith(".json"):
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:
            raise LmsmithError(f"{p} is not valid JSON: {e}") from None
        data = data if isinstance(data, list) else [data]
        for i, rec in enumerate(data, 1):
            if not isinstance(rec, dict):
                raise LmsmithError(f"{p}: item {i} is not a JSON object")
            items.append(Item(rec.get("id", i), rec))
    else:
        for n, rec in iter_jsonl(p):
            if not isinstance(rec, dict):
                raise LmsmithError(f"{p}:{n}: a record must be a JSON object, got {type(rec).__name__}")
            items.append(Item(rec.get("id", n), rec))
    if not items:
        raise LmsmithError(f"{p} has no records")
    return items[:limit] if limit else items


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


# ----------------------------------------------------------------------------- the run
@dataclass
class RunResult:
    records: list[dict[str, Any]]
    rejects: list[dict[str, Any]]
    manifest: dict[str, Any]
    failed: int


def run_chunks(generator: Generator, items: list[Item], output: str | Path, caller: Caller, *, chunk_size: int = 64,
               fingerprint: dict[str, Any] | None = None, manifest_extra: dict[str, Any] | None = None,
               progress: bool = True) -> RunResult:
    """Process `items` in chunks through `generator`, resuming from `OUTPUT.parts/`, and write OUTPUT, its
    rejects (`OUTPUT.rejects.jsonl`) and manifest (`OUTPUT.manifest.json`)."""
    from lmsmith.progress import task

    if chunk_size < 1:
        raise LmsmithError(f"--chunk-size must be >= 1, got {chunk_size}")
    out = Path(output).expanduser()
    if out.is_dir():
        raise LmsmithError(f"--output {out} is a directory", "give a file name, e.g. out.jsonl")
    parts = out.with_name(out.name + ".parts")
    stamp = json.dumps({"generator": generator.name, "templates": generator.template_hashes(),
                        "chunk_size": chunk_size, "items": len(items), **(fingerprint or {})},
                       sort_keys=True, ensure_ascii=False, default=str)
    stamp_file = parts / "run.json"
    if parts.exists() and (not stamp_file.is_file() or stamp_file.read_text(encoding="utf-8") != stamp):
        shutil.rmtree(parts)  # parts of a different command: start over (the cache still answers)
    parts.mkdir(parents=True, exist_ok=True)
    if not stamp_file.is_file():
        write_atomic(stamp_file, stamp.encode())

    started = time.time()
    chunks = [items[i:i + chunk_size] for i in range(0, len(items), chunk_size)]
    results: list[ChunkResult] = []
    reused = 0
    with (task(f"synth {generator.name}", len(items)) if progress else _no_bar()) as bar:
        caller.on_change = lambda: bar(0, info=caller.counters.info())
        for idx, chunk in enumerate(chunks):
            part = parts / f"{idx:06d}.json"
            res = None
            if part.is_file():
                try:
                    res = ChunkResult.from_json(json.loads(part.read_text(encoding="utf-8")))
                    reused += 1
                except (ValueError, KeyError):
                    res = None  # unreadable part: redo it (from the cache)
            if res is None:
                res = generator.process(chunk, caller)
                if res.failed == 0:
                    write_atomic(part, json.dumps(res.to_json(), ensure_ascii=False).encode("utf-8"))
            results.append(res)
            caller.counters.kept += len(res.records)
            bar(len(chunk), info=caller.counters.info())

    records = [r for res in results for r in res.records]
    rejects = [r for res in results for r in res.rejects]
    steps: Counter = Counter()
    for res in results:
        steps.update(res.steps)
    failed = sum(res.failed for res in results)
    c = caller.counters
    reasons = Counter(f"{r['step']}: {r['reason'].split(':')[0]}" for r in rejects)
    manifest = {
        "generator": generator.name, "model": caller.model, "backend": caller.backend.backend_id,
        "output": str(out), "records_in": len(items), "records_out": len(records),
        "chunks": {"total": len(chunks), "resumed": reused},
        "calls": {"answered_now": c.done, "from_cache": c.cached, "failed": c.failed},
        "tokens": {"prompt": c.prompt_tokens, "completion": c.completion_tokens,
                   "prompt_sent_now": c.sent_prompt_tokens, "completion_sent_now": c.sent_completion_tokens},
        "steps": dict(sorted(steps.items())), "rejects": dict(reasons.most_common()),
        "rejects_file": str(out.with_name(out.name + ".rejects.jsonl")),
        "errors": dict(c.errors.most_common(10)),
        "templates": generator.template_hashes(), "seconds": round(time.time() - started, 3),
        **(manifest_extra or {}),
    }
    write_atomic(out, jsonl_bytes(records))
    write_atomic(out.with_name(out.name + ".rejects.jsonl"), jsonl_bytes(rejects))
    write_atomic(out.with_name(out.name + ".manifest.json"),
                 (json.dumps(manifest, indent=1, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
    if failed == 0:
        shutil.rmtree(parts, ignore_errors=True)
    return RunResult(records, rejects, manifest, failed)


class _no_bar:
    def __enter__(self):
        return lambda *a, **k: None

    def __exit__(self, *exc):
        return False
