"""Reading traffic: request-log directories (serve/request_log.py's SQLite segments) and JSONL files.

A source is a JSONL file (`text` records, OpenAI `messages`, or `prompt`/`completion` pairs) or a request-log
directory, optionally cut to a time window (`--since 2026-12-01`, `--since 24h`, `--until 1h`).
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

from lmsmith.errors import LmsmithError
from lmsmith.serve.request_log import SEGMENT_GLOB

FIELDS = ("prompt", "completion", "both")


def parse_time(value: str | float | None, now: float | None = None) -> float | None:
    """Unix seconds from an ISO date/time, a unix number, or an age such as 30m, 24h, 7d (that long ago)."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        return float(value)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd])", value.strip())
    if m:
        return (now or time.time()) - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    try:
        return float(value)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise LmsmithError(f"cannot read the time '{value}'",
                           "use an ISO date (2026-12-01T10:00), unix seconds, or an age like 30m, 24h, 7d") from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt.timestamp()


def segments(directory: str | Path) -> list[Path]:
    d = Path(directory)
    return sorted(d.glob(SEGMENT_GLOB), key=lambda p: p.name)


def read_log(directory: str | Path, since: str | float | None = None, until: str | float | None = None,
             status: int | None = 200, version: str | None = None) -> list[dict[str, Any]]:
    """Rows of a request-log directory in time order (only successful requests unless `status=None`)."""
    d = Path(directory)
    if not d.is_dir():
        raise LmsmithError(f"request log directory not found: {d}", "pass the DIR given to `lmsmith serve --log-requests`")
    segs = segments(d)
    if not segs:
        raise LmsmithError(f"{d} holds no request-log segments (requests-*.sqlite)",
                           "serve with `--log-requests DIR` and send some traffic first")
    lo, hi = parse_time(since), parse_time(until)
    where, params = [], []
    if lo is not None:
        where.append("ts >= ?")
        params.append(lo)
    if hi is not None:
        where.append("ts < ?")
        params.append(hi)
    if status is not None:
        where.append("status = ?")
        params.append(status)
    if version is not None:
        where.append("version = ?")
        params.append(version)
    sql = "SELECT * FROM requests" + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY ts"
    rows: list[dict[str, Any]] = []
    for seg in segs:
        try:
            con = sqlite3.connect(f"file:{seg}?mode=ro", uri=True)
            con.row_factory = sqlite3.Row
            try:
                rows.extend(dict(r) for r in con.execute(sql, params))
            finally:
                con.close()
        except sqlite3.DatabaseError as e:  # a segment being rotated away or damaged: skip it, say so
            import logging

            logging.getLogger("lmsmith.ops").warning("skipping request-log segment %s: %s", seg.name, e)
    rows.sort(key=lambda r: r["ts"] or 0)
    return rows


def record_text(rec: dict[str, Any], field: str = "prompt") -> str | None:
    """The text of one JSONL record or log row: `text`, the last user message, or prompt/completion."""
    if field not in FIELDS:
        raise LmsmithError(f"--field must be one of {', '.join(FIELDS)}")
    if "text" in rec and isinstance(rec["text"], str):
        return rec["text"]
    prompt = rec.get("prompt")
    completion = rec.get("completion")
    msgs = rec.get("messages")
    if isinstance(msgs, str):
        try:
            msgs = json.loads(msgs)
        except json.JSONDecodeError:
            msgs = None
    if isinstance(msgs, list):
        users = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "user"]
        answers = [m.get("content") for m in msgs if isinstance(m, dict) and m.get("role") == "assistant"]
        prompt = prompt or (users[-1] if users else None)
        completion = completion or (answers[-1] if answers else None)
    if isinstance(prompt, list):
        prompt = "\n".join(str(p) for p in prompt)
    parts = {"prompt": [prompt], "completion": [completion], "both": [prompt, completion]}[field]
    parts = [p for p in parts if isinstance(p, str) and p.strip()]
    return "\n".join(parts) if parts else None


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    p = Path(path)
    with p.open(encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise LmsmithError(f"{p}:{i} is not valid JSON: {e.msg}", "one JSON object per line") from None
            if not isinstance(rec, dict):
                raise LmsmithError(f"{p}:{i} is not a JSON object")
            yield rec


def load_texts(source: str | Path, field: str = "prompt", since: str | float | None = None,
               until: str | float | None = None, version: str | None = None) -> list[str]:
    """Texts of a JSONL file or a request-log directory (the window applies to logs)."""
    p = Path(source)
    if not p.exists():
        raise LmsmithError(f"not found: {p}", "pass a JSONL file or a request-log directory")
    recs: Any = read_log(p, since, until, version=version) if p.is_dir() else read_jsonl(p)
    texts = [t for t in (record_text(r, field) for r in recs) if t]
    if not texts:
        raise LmsmithError(f"{p} has no texts" + (" in that time window" if p.is_dir() and (since or until) else ""),
                           "records need `text`, `messages`, or `prompt`/`completion`")
    return texts


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (model, version): requests, errors, latency and TTFT percentiles, tokens, time window."""
    import numpy as np

    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault((str(r.get("model") or ""), str(r.get("version") or "")), []).append(r)
    out = []
    for (model, version), rs in sorted(groups.items()):
        ok = [r for r in rs if r.get("status") == 200]
        lat = np.array([r["latency_s"] for r in ok if r.get("latency_s") is not None], float)
        ttft = np.array([r["ttft_s"] for r in ok if r.get("ttft_s") is not None], float)

        def pct(a: np.ndarray, q: float) -> float | None:
            return round(float(np.percentile(a, q)), 4) if len(a) else None

        out.append({"model": model, "version": version, "requests": len(rs), "errors": len(rs) - len(ok),
                    "error_rate": round((len(rs) - len(ok)) / len(rs), 4),
                    "latency_p50_s": pct(lat, 50), "latency_p95_s": pct(lat, 95), "ttft_p50_s": pct(ttft, 50),
                    "prompt_tokens": int(sum(r.get("prompt_tokens") or 0 for r in ok)),
                    "completion_tokens": int(sum(r.get("completion_tokens") or 0 for r in ok)),
                    "first": min(r["ts"] for r in rs), "last": max(r["ts"] for r in rs)})
    return out
