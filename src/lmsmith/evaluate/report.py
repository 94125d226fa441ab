"""Evaluation runs on disk: results.json (every item), report.md, PNG plots; scores onto the registry."""

from __future__ import annotations

import json
import math
import platform
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lmsmith.errors import LmsmithError
from lmsmith.home import lmsmith_home
from lmsmith.progress import console, out, table

MAIN_METRIC = {"multiple_choice": "acc", "generation": None, "perplexity": "bits_per_byte", "needle": "retrieval"}


def new_run_dir(label: str, run_dir: str | Path | None = None) -> Path:
    if run_dir:
        p = Path(run_dir).expanduser()
    else:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        safe = re.sub(r"[^A-Za-z0-9_.@-]+", "_", label)[:60]
        p = lmsmith_home() / "runs" / f"eval-{stamp}-{safe}"
        i = 1
        while p.exists():
            p = p.with_name(f"{p.name.rsplit('~', 1)[0]}~{i}")
            i += 1
    p.mkdir(parents=True, exist_ok=True)
    return p


def versions() -> dict[str, str]:
    import torch
    import transformers

    from lmsmith import __version__

    return {"lmsmith": __version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def main_metric(result: dict[str, Any]) -> str:
    m = MAIN_METRIC.get(result["kind"])
    if m and m in result["metrics"]:
        return m
    return next(k for k in result["metrics"] if not k.endswith("_stderr"))


def fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4f}"
    return str(v)


def flat_scores(results: list[dict[str, Any]]) -> dict[str, float]:
    """`{task}/{metric}` -> value, the form stored on the model version."""
    return {f"eval/{r['task']}/{k}": round(v, 6) for r in results for k, v in r["metrics"].items()
            if not k.endswith("_stderr") and not (isinstance(v, float) and math.isnan(v))}


def write_run(run_dir: Path, payload: dict[str, Any]) -> dict[str, Path]:
    files = {"json": run_dir / "results.json", "markdown": run_dir / "report.md"}
    files["json"].write_text(json.dumps(payload, indent=1, ensure_ascii=False, default=str) + "\n", encoding="utf-8")
    files["markdown"].write_text(markdown(payload), encoding="utf-8")
    for r in payload["results"]:
        if r["kind"] == "needle":
            from lmsmith.evaluate.needle import heatmap

            files[f"needle:{r['task']}"] = heatmap(r, run_dir / f"needle-{r['task']}.png")
    if payload["results"]:
        files["plot"] = scores_plot(payload, run_dir / "scores.png")
    return files


def markdown(payload: dict[str, Any]) -> str:
    lines = [f"# Evaluation of {payload['model']}", "",
             f"- date: {payload['date']}", f"- backend: {payload['backend']}", f"- seed: {payload['seed']}", "",
             "| task | kind | n | metric | value | stderr |", "|---|---|---|---|---|---|"]
    for r in payload["results"]:
        for k, v in r["metrics"].items():
            if k.endswith("_stderr"):
                continue
            lines.append(f"| {r['task']} | {r['kind']} | {r['n']} | {k} | {fmt(v)} | {fmt(r['metrics'].get(k + '_stderr'))} |")
    for r in payload["results"]:
        if r["kind"] == "needle":
            e = r["extra"]
            lines += ["", f"## {r['task']} (needle in a haystack)", "", f"![heatmap](needle-{r['task']}.png)", "",
                      f"- KV cache for the longest prompt: {e['kv_formula']}"]
            if e.get("skipped_lengths"):
                lines.append(f"- skipped lengths beyond the model's context: {e['skipped_lengths']}")
        if r["kind"] == "generation":
            lines += ["", f"## {r['task']}: first predictions", ""]
            for it in r["items"][:3]:
                lines.append(f"- target `{str(it['target'])[:80]}` -> `{it['prediction'][:120].strip()}`")
    return "\n".join(lines) + "\n"


def scores_plot(payload: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{r['task']}\n{k}", v, r["metrics"].get(f"{k}_stderr"))
            for r in payload["results"] for k, v in r["metrics"].items()
            if not k.endswith("_stderr") and r["kind"] != "perplexity"]
    fig, ax = plt.subplots(figsize=(max(4, 1.1 * len(rows) + 1), 3.2))
    if rows:
        err = [0 if (e is None or math.isnan(e)) else e for _, _, e in rows]
        ax.bar(range(len(rows)), [v for _, v, _ in rows], yerr=err, color="#4C72B0", capsize=3)
        ax.set_xticks(range(len(rows)), [n for n, _, _ in rows], fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score")
    ax.set_title(f"{payload['model']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def attach_to_registry(ref: str, results: list[dict[str, Any]], run_dir: Path,
                       settings: dict[str, Any] | None = None, date: str | None = None) -> str | None:
    """Store the scores on the model version's metadata (latest as metrics, every run in its eval history
    with its settings); a plain directory path has no metadata to update."""
    from lmsmith.registry.registry import Registry

    reg = Registry()
    if reg.is_path_ref(ref):
        return None
    run = {"date": date or datetime.now(timezone.utc).isoformat(timespec="seconds"), "run_dir": str(run_dir),
           "settings": settings or {},
           "tasks": {r["task"]: {"n": r["n"], "num_fewshot": (r.get("config") or {}).get("num_fewshot"),
                                 "metrics": {k: v for k, v in r["metrics"].items() if not k.endswith("_stderr")}}
                     for r in results}}
    mv = reg.update(ref, metrics={**flat_scores(results), "eval/last_run": str(run_dir)}, eval_run=run)
    return mv.ref


def load_run(ref: str) -> dict[str, Any] | None:
    """A results.json (or a run dir holding one), else None."""
    p = Path(ref).expanduser()
    if p.is_dir() and (p / "results.json").exists():
        p = p / "results.json"
    if p.is_file() and p.suffix == ".json":
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except ValueError as e:
            raise LmsmithError(f"{p} is not valid JSON: {e}") from None
        if "results" not in data:
            raise LmsmithError(f"{p} is not an lmsmith eval results file")
        return data
    return None


def print_table(payload: dict) -> None:
    """An eval run as a table on stdout: one row per task and metric, with its standard error."""
    t = table("task", "n", "metric", "value", "± stderr", title=f"{payload['model']}")
    for r in payload["results"]:
        for k, v in r["metrics"].items():
            if not k.endswith("_stderr"):
                t.add_row(r["task"], str(r["n"]), k, fmt(v), fmt(r["metrics"].get(f"{k}_stderr")))
    out.print(t)
    for r in payload["results"]:
        if r["kind"] == "needle":
            out.print(f"{r['task']}: KV cache {r['extra']['kv_formula']}")


def print_compare(res: dict) -> None:
    """Two runs side by side on stdout, with the paired test of each difference."""
    t = table("task", "metric", "A", "B", "B - A", "p", "test", "n",
              title=f"A = {res['a']}   B = {res['b']}   (p < 0.05 in bold)")
    for r in res["rows"]:
        sig = r["p_value"] is not None and r["p_value"] < 0.05
        t.add_row(r["task"], r["metric"], fmt(r["a"]), fmt(r["b"]), f"{r['delta']:+.4f}",
                  ("[bold]" if sig else "") + fmt(r["p_value"]), r["test"] or "-", str(r["n"] or "-"))
    out.print(t)
    for w in sorted({w for r in res["rows"] for w in r.get("warnings", [])}):
        console.print(f"[yellow]warning: {w}")
