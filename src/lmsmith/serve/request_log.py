"""The request log: prompts, completions, token counts, latency, model version and status of served requests.

Why SQLite: a request is one small row appended as it finishes; SQLite takes such appends durably from one
writer thread, needs no extra package, survives a crash mid-write (journal), and any tool reads it (sqlite3,
DuckDB's sqlite scanner, pandas), with an index on time for windowed drift queries. Parquet would need us to
buffer rows into large files (small files read badly and are lost when the process dies) and pyarrow at
serve time. The log is a directory of segments `requests-<UTC start>-<n>.sqlite`: a segment is closed when it
passes `max_file_mb` and the oldest segments are deleted while the directory exceeds `max_total_mb`.

The request path only puts a dict on a bounded queue (`put_nowait`): sampling is decided up front, PII is
scrubbed (lmsmith.data.pii) and rows are written in batches by a background thread. When the queue is full
the row is dropped and counted, never waited for.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import queue
import random
import sqlite3
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmsmith.data.pii import scrub_pii
from lmsmith.errors import LmsmithError

log = logging.getLogger("lmsmith.serve")

PII_MODES = ("scrub", "keep", "drop")
SEGMENT_GLOB = "requests-*.sqlite"
COLUMNS = {  # name -> SQLite type; the schema readers (ops/monitor) rely on
    "ts": "REAL", "request_id": "TEXT", "endpoint": "TEXT", "model": "TEXT", "served": "TEXT", "version": "TEXT",
    "status": "INTEGER",
    "user": "TEXT", "prompt": "TEXT", "messages": "TEXT", "completion": "TEXT", "prompt_tokens": "INTEGER",
    "completion_tokens": "INTEGER", "latency_s": "REAL", "ttft_s": "REAL", "finish_reason": "TEXT",
    "pii_scrubbed": "INTEGER",
}
SCHEMA = ("CREATE TABLE IF NOT EXISTS requests (id INTEGER PRIMARY KEY, "
          + ", ".join(f"{k} {v}" for k, v in COLUMNS.items()) + ");"
          "CREATE INDEX IF NOT EXISTS requests_ts ON requests(ts);")
_STOP = object()


@dataclass
class RequestLogConfig:
    directory: str
    sample: float = 1.0  # share of requests logged
    pii: str = "scrub"  # scrub: replace e-mails/phones/IPs with placeholders; keep; drop: no text at all
    max_file_mb: float = 64.0
    max_total_mb: float = 1024.0
    queue_size: int = 10_000
    batch: int = 512
    seed: int | None = None


def hash_user(user: str | None) -> str | None:
    """A stable pseudonym: canary stickiness and per-user analysis without storing who it was."""
    return None if not user else hashlib.sha256(user.encode()).hexdigest()[:16]


class RequestLog:
    def __init__(self, cfg: RequestLogConfig):
        if not 0.0 <= cfg.sample <= 1.0:
            raise LmsmithError(f"--log-sample must be between 0 and 1, got {cfg.sample}", "e.g. --log-sample 0.1")
        if cfg.pii not in PII_MODES:
            raise LmsmithError(f"--log-pii must be one of {', '.join(PII_MODES)}, got '{cfg.pii}'")
        self.cfg = cfg
        self.dir = Path(cfg.directory).expanduser()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            probe = self.dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise LmsmithError(f"cannot write the request log to {self.dir}: {e.strerror or e}",
                               "pass a writable directory to --log-requests") from None
        self.q: queue.Queue = queue.Queue(maxsize=cfg.queue_size)
        self.rng = random.Random(cfg.seed)
        self.written = self.dropped = self.sampled_out = self.rotations = self.deleted = 0
        self._conn: sqlite3.Connection | None = None
        self._path: Path | None = None
        self._seq = 0
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ request path (never blocks)
    def start(self) -> "RequestLog":
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="lmsmith-request-log", daemon=True)
                self._thread.start()
        return self

    def log(self, row: dict[str, Any]) -> bool:
        """Queue one row; False when sampled out or dropped because the writer is behind."""
        if self.cfg.sample < 1.0 and self.rng.random() >= self.cfg.sample:
            self.sampled_out += 1
            return False
        try:
            self.q.put_nowait(row)
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def log_handler(self, handler: Any, choices: list[Any], ttft: float | None, latency: float) -> None:
        """Rows of one finished OpenAI/V2 request (one per prompt), from the server's handler object."""
        b, s = handler.body, handler.s
        base = {"ts": time.time(), "request_id": handler.id, "model": getattr(b, "model", None),
                "served": s.model_name, "version": s.version,  # served: what the server follows, e.g. NAME@production
                "status": 200, "user": getattr(b, "user", None), "latency_s": latency, "ttft_s": ttft}
        messages = getattr(b, "messages", None)
        if messages is not None:
            msgs = [{"role": m.role, "content": m.text()} for m in messages]
            user_turns = [m["content"] for m in msgs if m["role"] == "user"]
            c = choices[0] if choices else None
            self.log({**base, "endpoint": "chat", "prompt": user_turns[-1] if user_turns else "", "messages": msgs,
                      "completion": c.text if c else "", "prompt_tokens": handler.prompt_tokens,
                      "completion_tokens": sum(len(x.token_ids) for x in choices),
                      "finish_reason": c.finish_reason if c else None})
            return
        texts = getattr(handler, "texts", None) or [None]
        n = max(1, getattr(b, "n", 1) or 1)
        for k, text in enumerate(texts):
            cs = choices[k * n:(k + 1) * n]
            self.log({**base, "endpoint": "completions", "prompt": text or "", "messages": None,
                      "completion": cs[0].text if cs else "", "prompt_tokens": handler.prompt_tokens // len(texts),
                      "completion_tokens": sum(len(x.token_ids) for x in cs),
                      "finish_reason": cs[0].finish_reason if cs else None})

    def log_error(self, endpoint: str, status: int, latency: float) -> None:
        self.log({"ts": time.time(), "endpoint": endpoint, "status": status, "latency_s": latency})

    # ------------------------------------------------------------------ writer thread
    def _scrub(self, row: dict[str, Any]) -> dict[str, Any]:
        mode = self.cfg.pii
        row = dict(row)
        row["user"] = hash_user(row.get("user"))
        if isinstance(row.get("messages"), list):
            row["messages"] = json.dumps(row["messages"], ensure_ascii=False)
        scrubbed = 0
        for key in ("prompt", "completion", "messages"):
            v = row.get(key)
            if v is None:
                continue
            if mode == "drop":
                row[key] = None
            elif mode == "scrub":
                row[key], counts = scrub_pii(v)
                scrubbed += sum(counts.values())
        row["pii_scrubbed"] = scrubbed
        return row

    def _open_segment(self) -> None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        self._seq += 1
        self._path = self.dir / f"requests-{stamp}-{os.getpid()}-{self._seq:04d}.sqlite"
        self._conn = sqlite3.connect(self._path, check_same_thread=False)
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)

    def _rotate_if_needed(self) -> None:
        if self._conn is None or self._path is None:
            return
        pages = self._conn.execute("PRAGMA page_count").fetchone()[0]
        size = pages * self._conn.execute("PRAGMA page_size").fetchone()[0]
        if size >= self.cfg.max_file_mb * 2**20:
            self._conn.close()
            self._conn = None
            self.rotations += 1
        self._enforce_total()

    def _enforce_total(self) -> None:
        segs = sorted(self.dir.glob(SEGMENT_GLOB), key=lambda p: p.stat().st_mtime)
        total = sum(p.stat().st_size for p in segs)
        for p in segs:
            if total <= self.cfg.max_total_mb * 2**20:
                break
            if p == self._path and self._conn is not None:
                continue  # never the segment being written
            total -= p.stat().st_size
            p.unlink(missing_ok=True)
            self.deleted += 1

    def _write(self, rows: list[dict[str, Any]]) -> None:
        if self._conn is None:
            self._open_segment()
        cols = list(COLUMNS)
        data = [tuple(r.get(c) for c in cols) for r in (self._scrub(r) for r in rows)]
        with self._conn:
            self._conn.executemany(f"INSERT INTO requests ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})",
                                   data)
        self.written += len(rows)
        self._rotate_if_needed()

    def _run(self) -> None:
        stop = False
        while not stop:
            item = self.q.get()
            rows = []
            if item is _STOP:
                stop = True
            else:
                rows.append(item)
            while len(rows) < self.cfg.batch:
                try:
                    item = self.q.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stop = True
                    break
                rows.append(item)
            taken = len(rows) + stop
            if rows:
                try:
                    self._write(rows)
                except Exception:  # a full disk must not take the server down: count and carry on
                    log.exception("request log write failed")
                    self.dropped += len(rows)
                    self._conn = None
            for _ in range(taken):
                self.q.task_done()
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until everything queued so far is written (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while self.q.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        if self._thread is None:
            return
        self.q.put(_STOP)
        self._thread.join(timeout=30)
        self._thread = None

    def collect(self):
        """Prometheus collector protocol: rows by outcome, so a writer that falls behind shows (and alerts)."""
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        c = CounterMetricFamily("lmsmith_request_log_rows", "request-log rows by outcome", labels=["outcome"])
        for outcome, n in (("written", self.written), ("dropped", self.dropped), ("sampled_out", self.sampled_out)):
            c.add_metric([outcome], float(n))
        yield c
        g = GaugeMetricFamily("lmsmith_request_log_queue", "rows waiting for the request-log writer")
        g.add_metric([], float(self.q.qsize()))
        yield g

    def stats(self) -> dict[str, int]:
        return {"written": self.written, "dropped": self.dropped, "sampled_out": self.sampled_out,
                "rotations": self.rotations, "deleted_segments": self.deleted}
