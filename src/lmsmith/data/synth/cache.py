"""The call cache: one SQLite row per answered model call, keyed by `backends.request_key`.

Each answer is committed as it arrives (WAL journal), so a SIGKILL loses at most the calls in flight; a rerun
finds every answered call here and sends only the rest. SQLite makes concurrent runs sharing one cache safe.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from pathlib import Path
from typing import Any

from lmsmith.errors import LmsmithError


class CallCache:
    def __init__(self, path: str | Path | None):
        """`path=None` keeps nothing (every call goes to the model)."""
        self.path = Path(path).expanduser() if path else None
        self.lock = threading.Lock()
        self.db: sqlite3.Connection | None = None
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite3.connect(str(self.path), check_same_thread=False, timeout=60)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS calls (key TEXT PRIMARY KEY, reply TEXT NOT NULL)")
            self.db.commit()
        except sqlite3.DatabaseError as e:
            raise LmsmithError(f"cannot open the synth cache {self.path}: {e}",
                               "pass another --cache-path, or --no-cache") from None

    def get(self, key: str) -> dict[str, Any] | None:
        if self.db is None:
            return None
        with self.lock:
            row = self.db.execute("SELECT reply FROM calls WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, key: str, reply: dict[str, Any]) -> None:
        if self.db is None:
            return
        with self.lock:
            self.db.execute("INSERT OR REPLACE INTO calls (key, reply) VALUES (?, ?)",
                            (key, json.dumps(reply, ensure_ascii=False)))
            self.db.commit()

    def __len__(self) -> int:
        if self.db is None:
            return 0
        with self.lock:
            return int(self.db.execute("SELECT COUNT(*) FROM calls").fetchone()[0])

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None
