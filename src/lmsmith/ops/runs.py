"""Training and evaluation runs under `$LMSMITH_HOME/runs/`: list, show, remove, and open MLflow's UI.

A run directory is self-describing: training runs hold `config.yaml`, `metrics.jsonl`, `checkpoints/`,
`final/` and `registered`; eval runs hold `results.json` (or `judge.json`, `compare.json`).
"""

from __future__ import annotations

import json
import os
import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from lmsmith.errors import LmsmithError
from lmsmith.home import lmsmith_home


def runs_root() -> Path:
    return lmsmith_home() / "runs"


def _last_metrics(path: Path) -> tuple[dict[str, Any], float | None]:
    """The last training record and the best eval loss of a metrics.jsonl."""
    last: dict[str, Any] = {}
    best = None
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if rec.get("split") == "eval":
                best = rec["loss"] if best is None else min(best, rec["loss"])
            else:
                last = rec
    return last, best


def describe(run_dir: Path) -> dict[str, Any]:
    """One run as a flat record (what `runs list` shows)."""
    rec: dict[str, Any] = {"id": run_dir.name, "path": str(run_dir),
                           "modified": datetime.fromtimestamp(run_dir.stat().st_mtime, timezone.utc).isoformat(timespec="seconds")}
    if (run_dir / "config.yaml").is_file():
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
        last, best = _last_metrics(run_dir / "metrics.jsonl")
        ckpts = sorted((run_dir / "checkpoints").glob("step-*")) if (run_dir / "checkpoints").is_dir() else []
        registered = (run_dir / "registered").read_text().strip() if (run_dir / "registered").is_file() else None
        status = "finished" if (run_dir / "final").is_dir() else ("stopped" if ckpts else "started")
        rec.update(kind=f"train {cfg.get('task', '?')}", model=cfg.get("model") or cfg.get("model_config_file"),
                   status=status, step=last.get("step"), loss=last.get("loss"), best_eval_loss=best,
                   checkpoints=[c.name for c in ckpts], registered=registered)
    else:
        for name, kind in (("results.json", "eval"), ("judge.json", "judge"), ("compare.json", "compare")):
            if (run_dir / name).is_file():
                try:
                    payload = json.loads((run_dir / name).read_text())
                except ValueError:
                    payload = {}
                rec.update(kind=kind, status="finished", model=payload.get("model") or payload.get("a"))
                if kind == "eval":
                    rec["scores"] = {r["task"]: {k: v for k, v in r["metrics"].items() if not k.endswith("_stderr")}
                                     for r in payload.get("results", [])}
                break
        else:
            rec.update(kind="unknown", status="?")
    return rec


def list_runs() -> list[dict[str, Any]]:
    root = runs_root()
    if not root.is_dir():
        return []
    dirs = [d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")]
    return [describe(d) for d in sorted(dirs, key=lambda d: d.stat().st_mtime, reverse=True)]


def find_run(ref: str) -> Path:
    """A run by path, by id, or by a unique prefix of its id."""
    p = Path(ref).expanduser()
    if p.is_dir():
        return p
    root = runs_root()
    if (root / ref).is_dir():
        return root / ref
    matches = [d for d in root.glob(f"{ref}*") if d.is_dir()] if root.is_dir() else []
    if len(matches) == 1:
        return matches[0]
    if matches:
        raise LmsmithError(f"'{ref}' matches {len(matches)} runs", "give more of the run id (see `lmsmith runs list`)")
    raise LmsmithError(f"no run '{ref}' in {root}", "see `lmsmith runs list`")


def remove_run(ref: str) -> Path:
    """Delete a run directory. Registered models keep their own copy in the registry."""
    d = find_run(ref)
    if not ((d / "config.yaml").is_file() or any((d / n).is_file() for n in ("results.json", "judge.json", "compare.json"))):
        raise LmsmithError(f"{d} does not look like an lmsmith run", "refusing to delete it")
    shutil.rmtree(d)
    return d


def mlflow_ui_command(host: str, port: int) -> list[str]:
    """The `mlflow ui` command over lmsmith's tracking store; the full MLflow package is needed for its server."""
    try:
        import flask  # noqa: F401  (the UI's server; mlflow-skinny does not ship it)
    except ImportError:
        raise LmsmithError("the MLflow UI needs the full mlflow package (lmsmith installs only mlflow-skinny)",
                           "pip install 'lmsmith[mlflow]'  (or pip install mlflow)") from None
    from lmsmith.train.tracking import default_tracking_uri

    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return ["mlflow", "ui", "--backend-store-uri", default_tracking_uri(), "--host", host, "--port", str(port)]
