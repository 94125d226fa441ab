"""Quality monitoring: grade a seeded sample of logged answers with the LLM judge, per model version.

Each run samples up to N answered requests from the request log (an equal share per version when several
were served, e.g. during a canary), grades them with lmsmith.evaluate.judge on a 1-5 rubric, and appends
one line per version to `DIR/quality.jsonl`, so the score can be followed over time and a falling version
spotted. Requests already graded in an earlier run are skipped.
"""

from __future__ import annotations

import json
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from lmsmith.errors import LmsmithError
from lmsmith.evaluate.backends import Backend
from lmsmith.evaluate.judge import JudgeConfig, judge
from lmsmith.ops.monitor.logs import read_log

HISTORY = "quality.jsonl"
DEFAULT_RUBRIC = ("Is the response helpful, correct and in the language of the question? 5: fully answers it, "
                  "correct, same language; 3: partly helpful or with errors; 1: wrong, off-topic or another language.")


def sample_rows(rows: list[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Up to `n` rows, split evenly over versions (each version's sample seeded and without repeats)."""
    by_version: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        by_version[str(r.get("version") or "")].append(r)
    rng = random.Random(seed)
    out: list[dict[str, Any]] = []
    versions = sorted(by_version)
    share = max(1, n // max(1, len(versions)))
    for v in versions:
        pool = by_version[v]
        out.extend(rng.sample(pool, min(share, len(pool))))
    return out[:n] if len(versions) == 1 else out


def graded_ids(directory: Path) -> set[str]:
    p = directory / HISTORY
    ids: set[str] = set()
    if p.exists():
        for line in p.read_text(encoding="utf-8").splitlines():
            if line.strip():
                ids.update(json.loads(line).get("request_ids", []))
    return ids


def monitor_quality(log_dir: str | Path, backend: Backend, sample: int = 50, seed: int = 0,
                    since: str | None = None, until: str | None = None, rubric: str = DEFAULT_RUBRIC,
                    judge_name: str = "", regrade: bool = False) -> dict[str, Any]:
    d = Path(log_dir)
    rows = [r for r in read_log(d, since, until) if r.get("prompt") and r.get("completion")]
    if not regrade:
        done = graded_ids(d)
        rows = [r for r in rows if r.get("request_id") not in done]
    if not rows:
        raise LmsmithError(f"no ungraded answered requests with text in {d}",
                           "serve with --log-requests (not --log-pii drop), send traffic, or pass --regrade")
    picked = sample_rows(rows, sample, seed)
    items = [{"id": i, "prompt": r["prompt"], "response": r["completion"]} for i, r in enumerate(picked)]
    cfg = JudgeConfig(mode="absolute", scale=(1, 5), rubric=rubric, seed=seed)
    result = judge(items, backend, cfg)
    per: dict[str, list[tuple[dict[str, Any], dict[str, Any]]]] = defaultdict(list)
    for r, item in zip(picked, result["items"]):
        per[str(r.get("version") or "")].append((r, item))
    now = time.time()
    lines = []
    for v, pairs in sorted(per.items()):
        scores = [it["score"] for _, it in pairs if it.get("score") is not None]
        lines.append({"ts": now, "judge": judge_name, "model": pairs[0][0].get("model"), "version": v,
                      "n": len(pairs), "parsed": len(scores),
                      "mean_score": sum(scores) / len(scores) if scores else None,
                      "window": [min(r["ts"] for r, _ in pairs), max(r["ts"] for r, _ in pairs)],
                      "request_ids": [r.get("request_id") for r, _ in pairs]})
    with (d / HISTORY).open("a", encoding="utf-8") as f:
        for line in lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    return {"versions": [{k: v for k, v in line.items() if k != "request_ids"} for line in lines],
            "history": history(d), "summary": result["summary"]}


def history(directory: str | Path) -> list[dict[str, Any]]:
    """Every graded run per version, oldest first (without the request ids)."""
    p = Path(directory) / HISTORY
    if not p.exists():
        return []
    out = []
    for line in p.read_text(encoding="utf-8").splitlines():
        if line.strip():
            rec = json.loads(line)
            rec.pop("request_ids", None)
            out.append(rec)
    return out
