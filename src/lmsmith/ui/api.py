"""The UI's JSON API: registry versions and alias moves, training/eval runs and their files, arena votes
(stored as TRL preference pairs for `train dpo`), and a summary of the server's own Prometheus metrics."""

from __future__ import annotations

import json
import math
import secrets
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from lmsmith.errors import LmsmithError
from lmsmith.home import lmsmith_home

SERVABLE = {".png": "image/png", ".md": "text/markdown", ".json": "application/json", ".html": "text/html"}


def default_preferences_path() -> Path:
    return lmsmith_home() / "ui" / "preferences.jsonl"


class AliasMove(BaseModel):
    ref: str
    alias: str
    delete: bool = False


class Vote(BaseModel):
    messages: list[dict[str, Any]]  # the conversation both answers continue
    answer_a: str
    answer_b: str
    model_a: str
    model_b: str
    winner: str  # "a" | "b" | "tie"


def make_router(api_key: str | None, preferences: Path | None = None) -> APIRouter:
    prefs = preferences or default_preferences_path()
    lock = threading.Lock()

    async def auth(request: Request) -> None:
        if not api_key:
            return
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(token.strip().encode(), api_key.encode()):
            raise HTTPException(401, "invalid or missing API key: the UI asks for the server's --api-key")

    r = APIRouter(prefix="/ui/api", dependencies=[Depends(auth)])

    def fail(e: LmsmithError, status: int = 400):
        raise HTTPException(status, str(e))

    @r.get("/models")
    def models() -> list[dict[str, Any]]:
        from lmsmith.registry import Registry
        from lmsmith.registry.views import version_dict

        return [version_dict(v) for v in Registry().list()]

    @r.post("/alias")
    def move_alias(body: AliasMove) -> dict[str, Any]:
        from lmsmith.registry import Registry
        from lmsmith.registry.views import version_dict

        reg = Registry()
        try:
            if body.delete:
                reg.remove_alias(body.ref.partition("@")[0], body.alias)
            else:
                reg.set_alias(body.ref, body.alias)
            return {"ok": True, "versions": [version_dict(v) for v in reg.list(body.ref.partition("@")[0])]}
        except LmsmithError as e:
            fail(e)

    @r.get("/runs")
    def runs() -> list[dict[str, Any]]:
        from lmsmith.ops.runs import list_runs

        return list_runs()

    @r.get("/runs/{run_id}")
    def run(run_id: str) -> dict[str, Any]:
        import yaml

        from lmsmith.ops.runs import describe, find_run
        from lmsmith.train.tracking import read_metrics

        try:
            d = find_run(run_id)
        except LmsmithError as e:
            fail(e, 404)
        rec = describe(d)
        rec["config"] = yaml.safe_load((d / "config.yaml").read_text()) if (d / "config.yaml").is_file() else None
        rec["metrics"] = read_metrics(d / "metrics.jsonl") if (d / "metrics.jsonl").is_file() else []
        rec["files"] = sorted(p.name for p in d.iterdir() if p.is_file() and p.suffix in SERVABLE)
        if (d / "results.json").is_file():
            payload = json.loads((d / "results.json").read_text())
            rec["results"] = [{"task": t["task"], "n": t["n"], "metrics": t["metrics"]} for t in payload.get("results", [])]
        if (d / "compare.json").is_file():
            rec["compare"] = json.loads((d / "compare.json").read_text())
        return _finite(rec)

    @r.get("/runs/{run_id}/files/{name}")
    def run_file(run_id: str, name: str):
        from lmsmith.ops.runs import find_run

        try:
            d = find_run(run_id)
        except LmsmithError as e:
            fail(e, 404)
        p = d / name
        if "/" in name or name.startswith(".") or p.suffix not in SERVABLE or not p.is_file():
            raise HTTPException(404, f"no file {name} in run {run_id}")
        return FileResponse(p, media_type=SERVABLE[p.suffix])

    @r.post("/vote")
    def vote(body: Vote) -> dict[str, Any]:
        """An arena vote; a preference (not a tie) is appended in TRL's conversational preference format."""
        if body.winner not in ("a", "b", "tie"):
            raise HTTPException(400, "winner must be a, b or tie")
        if body.winner == "tie":
            return {"stored": False}
        chosen, rejected = (body.answer_a, body.answer_b) if body.winner == "a" else (body.answer_b, body.answer_a)
        rec = {"prompt": body.messages, "chosen": [{"role": "assistant", "content": chosen}],
               "rejected": [{"role": "assistant", "content": rejected}],
               "metadata": {"source": "ui-arena", "model_a": body.model_a, "model_b": body.model_b,
                            "winner": body.winner, "date": datetime.now(timezone.utc).isoformat(timespec="seconds")}}
        with lock:
            prefs.parent.mkdir(parents=True, exist_ok=True)
            with open(prefs, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        return {"stored": True, "path": str(prefs)}

    @r.get("/monitor")
    def monitor(request: Request) -> dict[str, Any]:
        state = getattr(request.app.state, "lmsmith", None)
        out: dict[str, Any] = {"serving": state is not None}
        if state is not None:
            out.update(model=state.model_name, uptime_s=round(datetime.now().timestamp() - state.started, 1),
                       **metrics_summary(state.metrics.registry))
        reports = lmsmith_home() / "monitor"
        out["reports"] = sorted(p.name for p in reports.glob("*.html")) if reports.is_dir() else []
        return _finite(out)

    @r.get("/monitor/reports/{name}")
    def report(name: str):
        p = lmsmith_home() / "monitor" / name
        if "/" in name or p.suffix != ".html" or not p.is_file():
            raise HTTPException(404, f"no report {name}")
        return FileResponse(p, media_type="text/html")

    return r


def _finite(x: Any) -> Any:
    """JSON has no NaN/inf: None instead."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_finite(v) for v in x]
    return x


def histogram_quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """Prometheus' histogram_quantile over cumulative (upper bound, count) buckets."""
    buckets = sorted(buckets)
    total = buckets[-1][1] if buckets else 0
    if not total:
        return None
    rank, prev_le, prev_c = q * total, 0.0, 0.0
    for le, c in buckets:
        if c >= rank:
            if math.isinf(le):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 0)
        prev_le, prev_c = le, c
    return prev_le


def metrics_summary(registry) -> dict[str, Any]:
    """Requests by status, latency percentiles (ms) and engine gauges from the server's metric registry."""
    from prometheus_client.exposition import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    gauges: dict[str, float] = {}
    counters: dict[str, float] = {}
    hist: dict[str, list[tuple[float, float]]] = {}
    by_status: dict[str, float] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            if fam.type == "histogram" and s.name.endswith("_bucket") and set(s.labels) <= {"le"}:
                hist.setdefault(fam.name, []).append((float(s.labels["le"]), s.value))
            elif fam.type == "counter" and s.name.endswith("_total"):
                counters[s.name] = counters.get(s.name, 0.0) + s.value
                if "status" in s.labels or "code" in s.labels:
                    key = s.labels.get("status") or s.labels.get("code")
                    by_status[key] = by_status.get(key, 0.0) + s.value
            elif fam.type == "gauge":
                gauges[s.name] = gauges.get(s.name, 0.0) + s.value
    lat = {}
    for name, label in (("lmsmith_time_to_first_token_seconds", "ttft"), ("lmsmith_time_per_output_token_seconds", "tpot"),
                        ("lmsmith_e2e_request_latency_seconds", "e2e")):
        for q in (0.5, 0.95, 0.99):
            v = histogram_quantile(hist.get(name, []), q)
            lat[f"{label}_p{int(q * 100)}_ms"] = None if v is None else round(1000 * v, 2)
    return {"requests_by_status": by_status, "latency": lat,
            "running": gauges.get("lmsmith_requests_running"), "waiting": gauges.get("lmsmith_requests_waiting"),
            "kv_usage": gauges.get("lmsmith_kv_cache_usage_ratio"),
            "prompt_tokens": counters.get("lmsmith_prompt_tokens_total"),
            "generation_tokens": counters.get("lmsmith_generation_tokens_total"),
            "guard": {k: v for k, v in counters.items() if "guard" in k}}
