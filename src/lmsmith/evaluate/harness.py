"""`lmsmith eval` and `lmsmith eval compare` as functions: evaluate a model on tasks, compare two models."""

from __future__ import annotations

import random
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from lmsmith.errors import LmsmithError
from lmsmith.evaluate import metrics as M
from lmsmith.evaluate import report
from lmsmith.evaluate.backends import Backend, make_backend
from lmsmith.evaluate.runner import run_task
from lmsmith.evaluate.tasks import load_task
from lmsmith.progress import console


def parse_tasks(spec: str | list[str]) -> list[str]:
    names = [t.strip() for t in (spec.split(",") if isinstance(spec, str) else spec) if t.strip()]
    if not names:
        raise LmsmithError("no tasks given", "pass --tasks NAME[,NAME...] (built-in names or task YAML paths)")
    return names


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def evaluate(model: str | None, tasks: str | list[str], *, endpoint: str | None = None, api_model: str | None = None,
             api_key: str | None = None, num_fewshot: int | None = None, limit: int | None = None, seed: int = 0,
             dtype: str = "auto", device: str | None = None, batch_size: int = 16, chat: bool = False,
             run_dir: str | Path | None = None, attach: bool = True, backend: Backend | None = None,
             endpoint_options: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate on every task, write the run dir, attach the scores to the registry. Returns the payload."""
    loaded = [load_task(t, num_fewshot=num_fewshot, limit=limit) for t in parse_tasks(tasks)]  # all errors before loading a model
    seed_everything(seed)
    backend = backend or make_backend(model, endpoint=endpoint, api_model=api_model, api_key=api_key, dtype=dtype,
                                      device=device, batch_size=batch_size, chat=chat, endpoint_options=endpoint_options)
    label = model or api_model or "model"
    results = []
    for task in loaded:
        results.append(run_task(task, backend, seed=seed).to_dict())
    payload = {
        "model": label, "backend": type(backend).__name__ + (f" ({endpoint})" if endpoint else ""),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "seed": seed,
        "settings": {"num_fewshot": num_fewshot, "limit": limit, "dtype": dtype, "batch_size": batch_size, "chat": chat},
        "versions": report.versions(), "results": results,
    }
    out = report.new_run_dir(label, run_dir)
    payload["run_dir"] = str(out)
    payload["files"] = {k: str(v) for k, v in report.write_run(out, payload).items()}
    if attach and model and not endpoint:
        payload["registry_ref"] = report.attach_to_registry(model, results, out, settings=payload["settings"],
                                                            date=payload["date"])
    (out / "results.json").write_text(__import__("json").dumps(payload, indent=1, ensure_ascii=False, default=str) + "\n")
    return payload


def per_item(result: dict[str, Any], metric: str) -> dict[Any, float]:
    key = "id" if result["items"] and "id" in result["items"][0] else None
    return {(it[key] if key else (it.get("length"), it.get("depth"))): float(it[metric])
            for it in result["items"] if metric in it}


# Settings that change what is measured: two runs that differ in any of them measure different things.
COMPARABLE_SETTINGS = ("path", "num_fewshot", "fewshot_seed", "target_delimiter", "fewshot_delimiter",
                       "generation_kwargs")


def setting_mismatches(ra: dict[str, Any], rb: dict[str, Any]) -> list[str]:
    """What differs between two runs of one task: its settings, and the prompts of the items they share."""
    ca, cb = ra.get("config") or {}, rb.get("config") or {}
    out = [f"{ra['task']}: {k} {ca.get(k)!r} vs {cb.get(k)!r}" for k in COMPARABLE_SETTINGS if ca.get(k) != cb.get(k)]
    pa = {it["id"]: it["prompt"] for it in ra["items"] if "id" in it and "prompt" in it}
    pb = {it["id"]: it["prompt"] for it in rb["items"] if "id" in it and "prompt" in it}
    differ = [k for k in set(pa) & set(pb) if pa[k] != pb[k]]
    if differ:
        out.append(f"{ra['task']}: the prompts differ on {len(differ)} of the shared items")
    return out


def compare_payloads(a: dict[str, Any], b: dict[str, Any], seed: int = 0,
                     allow_mismatch: bool = False) -> list[dict[str, Any]]:
    """Per task and metric: both scores on the items both runs scored (paired by id), the difference (b - a)
    and its significance (McNemar for 0/1 outcomes, paired bootstrap otherwise). Runs whose settings or
    prompts differ measure different things: refused unless `allow_mismatch` (then each row says why)."""
    rows = []
    by_task_b = {r["task"]: r for r in b["results"]}
    shared = [(ra, by_task_b[ra["task"]]) for ra in a["results"] if ra["task"] in by_task_b]
    if not shared:
        raise LmsmithError("the two runs share no task", "evaluate both on the same --tasks")
    mismatches = [m for ra, rb in shared for m in setting_mismatches(ra, rb)]
    if mismatches and not allow_mismatch:
        raise LmsmithError("the two runs were evaluated differently: " + "; ".join(mismatches),
                           "re-run both with the same --tasks/--num-fewshot, or pass --allow-mismatch to compare anyway")
    for ra, rb in shared:
        notes = setting_mismatches(ra, rb)
        for metric, va in ra["metrics"].items():
            if metric.endswith("_stderr") or metric not in rb["metrics"]:
                continue
            row = {"task": ra["task"], "metric": metric, "a": va, "b": rb["metrics"][metric],
                   "delta": rb["metrics"][metric] - va, "p_value": None, "test": None, "n": None,
                   "n_a": ra["n"], "n_b": rb["n"], "warnings": list(notes)}
            ia, ib = per_item(ra, metric), per_item(rb, metric)
            common = sorted(set(ia) & set(ib), key=str)
            if common:
                xa, xb = [ia[k] for k in common], [ib[k] for k in common]
                row.update(a=float(np.mean(xa)), b=float(np.mean(xb)), delta=float(np.mean(xb) - np.mean(xa)),
                           a_all=va, b_all=rb["metrics"][metric], n=len(common))
                stat = M.mcnemar(xa, xb) if M.is_binary(xa + xb) else M.paired_bootstrap(xa, xb, seed=seed)
                row.update({k: v for k, v in stat.items() if k != "delta"})
                if len(common) < max(len(ia), len(ib)):
                    row["warnings"].append(f"compared on the {len(common)} items both runs scored "
                                           f"(A scored {len(ia)}, B {len(ib)})")
            elif ia or ib:
                raise LmsmithError(f"{ra['task']}: the two runs scored no item in common",
                                   "evaluate both on the same items (same task file and --limit)")
            else:
                row["warnings"].append("corpus-level metric: not paired by item")
            rows.append(row)
    return rows


def compare(ref_a: str, ref_b: str, tasks: str | list[str] | None, *, run_dir: str | Path | None = None,
            seed: int = 0, allow_mismatch: bool = False, **eval_kwargs: Any) -> dict[str, Any]:
    """Compare two models (refs, evaluated now) or two earlier runs (results.json / run dirs)."""
    payloads = []
    for ref in (ref_a, ref_b):
        loaded = report.load_run(ref)
        if loaded is None:
            if not tasks:
                raise LmsmithError(f"{ref} is a model, so --tasks is needed", "or pass two results.json files")
            console.print(f"[bold]evaluating {ref}")
            loaded = evaluate(ref, tasks, seed=seed, **eval_kwargs)
        payloads.append(loaded)
    rows = compare_payloads(payloads[0], payloads[1], seed=seed, allow_mismatch=allow_mismatch)
    out = report.new_run_dir(f"compare-{payloads[0]['model']}-vs-{payloads[1]['model']}", run_dir)
    result = {"a": payloads[0]["model"], "b": payloads[1]["model"], "a_run": payloads[0].get("run_dir"),
              "b_run": payloads[1].get("run_dir"), "rows": rows, "run_dir": str(out)}
    import json

    (out / "compare.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "compare.md").write_text(compare_markdown(result))
    compare_plot(result, out / "compare.png")
    return result


def compare_markdown(result: dict[str, Any]) -> str:
    lines = [f"# {result['a']} (A) vs {result['b']} (B)", "", "| task | metric | A | B | B - A | p | test | n |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['task']} | {r['metric']} | {report.fmt(r['a'])} | {report.fmt(r['b'])} | {r['delta']:+.4f} | "
                     f"{report.fmt(r['p_value'])} | {r['test'] or '-'} | {r['n'] if r['n'] is not None else '-'} |")
    warnings = sorted({w for r in result["rows"] for w in r.get("warnings", [])})
    lines += ["", "Scores are over the items both runs scored (paired by id); "
              "p < 0.05: the difference is unlikely to be chance on these items."]
    lines += [f"- warning: {w}" for w in warnings]
    return "\n".join(lines) + "\n"


def compare_plot(result: dict[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r["metric"] not in ("token_perplexity", "byte_perplexity", "word_perplexity")]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(4, 1.2 * len(rows) + 1), 3.2))
    ax.bar(x - 0.2, [r["a"] for r in rows], 0.4, label=f"A: {result['a']}"[:40])
    ax.bar(x + 0.2, [r["b"] for r in rows], 0.4, label=f"B: {result['b']}"[:40])
    for i, r in enumerate(rows):
        if r["p_value"] is not None and r["p_value"] < 0.05:
            ax.text(i, max(r["a"], r["b"]) + 0.02, "*", ha="center")
    ax.set_xticks(x, [f"{r['task']}\n{r['metric']}" for r in rows], fontsize=7)
    ax.legend(fontsize=7)
    ax.set_title("* = significant at p < 0.05", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
