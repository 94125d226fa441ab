"""Run tracking: `metrics.jsonl` in the run directory (always), MLflow (when installed), a PNG curve.

metrics.jsonl holds one JSON object per optimizer step (`step` 1-based, `loss`, `lr`, `grad_norm`,
`tokens_per_s`, ...) and eval records marked `"split": "eval"`. MLflow is optional: it is imported
lazily and a missing package only costs a warning, so training never depends on it
(`--no-mlflow` or LMSMITH_NO_MLFLOW=1 turn it off).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any

from lmsmith.home import lmsmith_home
from lmsmith.progress import console


def default_tracking_uri() -> str:
    return (lmsmith_home() / "mlruns").resolve().as_uri()


class Tracker:
    def __init__(self, run_dir: Path, run_id: str, enabled_mlflow: bool = True, uri: str | None = None,
                 experiment: str = "lmsmith", resume_step: int = 0):
        self.path = run_dir / "metrics.jsonl"
        self.run_id = run_id
        self._truncate_after(resume_step)
        self.mlflow = None
        self.mlflow_run_id: str | None = None
        self._pending: list[tuple[int, dict[str, float]]] = []
        self._flushed = time.monotonic()
        if enabled_mlflow and not os.environ.get("LMSMITH_NO_MLFLOW"):
            self._start_mlflow(run_dir, uri or default_tracking_uri(), experiment)

    def _truncate_after(self, step: int) -> None:
        """On resume, drop records of steps after the checkpoint (they are recomputed identically)."""
        if not self.path.exists():
            return
        keep = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by a kill
            if rec.get("step", 0) <= step:
                keep.append(line)
        self.path.write_text("".join(x + "\n" for x in keep))

    def _start_mlflow(self, run_dir: Path, uri: str, experiment: str) -> None:
        if uri.startswith("file:"):  # MLflow 3 wants an opt-in for its (maintained, working) file store
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        try:
            import mlflow
        except ImportError:
            console.print("[yellow]warning:[/] mlflow is not installed; metrics go to metrics.jsonl only "
                          "(pip install mlflow-skinny)")
            return
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                mlflow.set_tracking_uri(uri)
                mlflow.set_experiment(experiment)
                saved = run_dir / "mlflow_run_id"
                prev = saved.read_text().strip() if saved.exists() else None
                run = mlflow.start_run(run_id=prev) if prev else mlflow.start_run(run_name=self.run_id)
                saved.write_text(run.info.run_id)
            self.mlflow = mlflow
            self.mlflow_run_id = run.info.run_id
        except Exception as e:  # a broken tracking server must not stop training
            console.print(f"[yellow]warning:[/] MLflow at {uri} unavailable ({str(e).splitlines()[0][:120]}); "
                          "metrics go to metrics.jsonl only")

    def log_params(self, params: dict[str, Any]) -> None:
        if self.mlflow:
            try:
                flat = {k: (json.dumps(v) if isinstance(v, (list, dict)) else v) for k, v in params.items()}
                self.mlflow.log_params({k: str(v)[:500] for k, v in flat.items()})
            except Exception:
                pass

    def log(self, record: dict[str, Any]) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.mlflow:
            prefix = "eval_" if record.get("split") == "eval" else ""
            metrics = {prefix + k: float(v) for k, v in record.items()
                       if k not in ("step", "split") and isinstance(v, (int, float)) and math.isfinite(v)}
            self._pending.append((int(record["step"]), metrics))
            if time.monotonic() - self._flushed > 15:
                self.flush()

    def flush(self) -> None:
        """Send buffered metrics in one batch: per-step calls to a file store cost ~0.1 s each."""
        if not (self.mlflow and self._pending):
            return
        from mlflow.entities import Metric
        from mlflow.tracking import MlflowClient

        ts = int(time.time() * 1000)
        batch = [Metric(k, v, ts, step) for step, m in self._pending for k, v in m.items()]
        try:
            client = MlflowClient()
            for i in range(0, len(batch), 900):
                client.log_batch(self.mlflow_run_id, metrics=batch[i:i + 900], synchronous=True)
        except Exception as e:
            console.print(f"[yellow]warning:[/] could not send metrics to MLflow: {str(e).splitlines()[0][:120]}")
        self._pending = []
        self._flushed = time.monotonic()

    def log_artifact(self, path: Path) -> None:
        if self.mlflow and path.exists():
            try:
                self.mlflow.log_artifact(str(path))
            except Exception:
                pass

    def close(self, status: str = "FINISHED") -> None:
        if self.mlflow:
            self.flush()
            try:
                self.mlflow.end_run(status=status)
            except Exception:
                pass


def read_metrics(path: Path) -> list[dict[str, Any]]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                pass
    return out


def plot_curves(metrics_path: Path, png: Path) -> Path | None:
    """Loss (train and eval) and learning rate against step."""
    recs = read_metrics(metrics_path)
    train = [r for r in recs if r.get("split", "train") == "train" and "loss" in r]
    evals = [r for r in recs if r.get("split") == "eval"]
    if not train:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train loss", lw=1)
    if evals:
        ax.plot([r["step"] for r in evals], [r["loss"] for r in evals], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax2 = ax.twinx()
    ax2.plot([r["step"] for r in train], [r.get("lr", 0) for r in train], color="tab:green", alpha=0.5, label="lr")
    ax2.set_ylabel("learning rate")
    lines = ax.get_legend_handles_labels()
    lines2 = ax2.get_legend_handles_labels()
    ax.legend(lines[0] + lines2[0], lines[1] + lines2[1], loc="upper right")
    ax.set_title(f"{metrics_path.parent.name}")
    fig.tight_layout()
    fig.savefig(png, dpi=100)
    plt.close(fig)
    return png
