"""How a model version reads to a person: a JSON-ready dict and a rich table (`lmsmith models show`, the demo)."""

from __future__ import annotations

import json

from rich.table import Table

from lmsmith.progress import human_bytes, table
from lmsmith.registry.registry import ModelVersion


def version_dict(mv: ModelVersion) -> dict:
    d = json.loads(mv.model_dump_json())
    d["ref"] = mv.ref
    d["size"] = mv.size
    return d


def version_table(mv: ModelVersion) -> Table:
    """One version as a two-column table: where it is, what it came from, its tags and metrics."""
    d = version_dict(mv)
    t = table("key", "value", show_header=False, title=mv.ref)
    for key in ("kind", "base", "created", "path", "aliases"):
        if d.get(key):
            t.add_row(key, str(d[key]) if not isinstance(d[key], list) else ", ".join(d[key]))
    t.add_row("size", f"{human_bytes(mv.size)} in {len(mv.files)} files ({human_bytes(mv.stored_bytes)} new in the store)")
    lin = mv.lineage
    for key, val in (("parent", lin.parent), ("stage", lin.stage), ("command", lin.command), ("run id", lin.run_id),
                     ("source", lin.source)):
        if val:
            t.add_row(key, str(val))
    for ref in lin.data:
        t.add_row("data", f"{ref.path} sha256:{(ref.sha256 or '?')[:12]}")
    for k, v in mv.tags.items():
        t.add_row(f"tag {k}", str(v))
    for k, v in mv.metrics.items():
        t.add_row(f"metric {k}", json.dumps(v) if not isinstance(v, (int, float, str)) else str(v))
    return t


def eval_table(mv: ModelVersion) -> Table:
    """Every eval run of a version with its settings (date, task, items, few-shot, limit, scores, run dir)."""
    e = table("date", "task", "n", "few-shot", "limit", "scores", "run", title=f"eval runs of {mv.ref}")
    for run in mv.evals:
        for task, r in run["tasks"].items():
            scores = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in r["metrics"].items())
            e.add_row(run["date"], task, str(r["n"]), str(r.get("num_fewshot")), str(run.get("settings", {}).get("limit")),
                      scores, run["run_dir"])
    return e
