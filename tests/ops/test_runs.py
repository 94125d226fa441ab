"""`lmsmith runs list|show|rm|ui` over real training and eval runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lmsmith.cli import main
from lmsmith.train.config import PretrainConfig
from lmsmith.train.loop import train

PROSE = Path(__file__).resolve().parents[1] / "train" / "data" / "prose.txt"


def test_runs_list_show_rm_and_the_tracking_store_opens(tiny_ref, lmsmith_home, tmp_path, capsys):
    result = train(PretrainConfig(model=tiny_ref, data=[str(PROSE)], steps=3, seq_len=32, batch_size=2, lr=3e-3,
                                  eval_fraction=0.2, eval_every=2, plot=False, workers=1, output_name="tp"))
    capsys.readouterr()
    assert main(["runs", "list", "--json"]) == 0
    runs = json.loads(capsys.readouterr().out)
    assert len(runs) == 1
    r = runs[0]
    assert r["id"] == result.run_id and r["kind"] == "train pretrain" and r["status"] == "finished"
    assert r["step"] == 3 and r["registered"] == "tp@1" and r["best_eval_loss"] is not None
    assert main(["runs", "list"]) == 0
    assert result.run_id in capsys.readouterr().out  # never truncated, also in a pipe
    assert main(["runs", "show", result.run_id[:12], "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["id"] == result.run_id

    # the MLflow tracking store the README points `mlflow ui` at opens and holds this run's metrics
    from mlflow.tracking import MlflowClient

    from lmsmith.train.tracking import default_tracking_uri

    client = MlflowClient(default_tracking_uri())
    found = [run for exp in client.search_experiments() for run in client.search_runs([exp.experiment_id])]
    assert any(run.data.params.get("run_id") == result.run_id and "loss" in run.data.metrics for run in found)

    assert main(["runs", "rm", result.run_id]) == 0
    assert not result.run_dir.exists()
    assert main(["models", "show", "tp"]) == 0  # the registered model stays
    assert main(["runs", "show", "nosuch"]) == 1
    assert "no run 'nosuch'" in capsys.readouterr().err


def test_runs_ui_without_full_mlflow_says_what_to_install(capsys):
    pytest.importorskip("mlflow")
    try:
        import flask  # noqa: F401

        pytest.skip("full mlflow (flask) installed: `runs ui` would start the server")
    except ImportError:
        pass
    assert main(["runs", "ui"]) == 1
    assert "pip install 'lmsmith[mlflow]'" in capsys.readouterr().err


def test_models_list_in_a_pipe_keeps_whole_names(registry, tiny_dir, lmsmith_home):
    import os
    import subprocess
    import sys

    name = "a-rather-long-model-name-that-rich-used-to-cut-short-in-pipes"
    registry.register(tiny_dir, name)
    env = {**os.environ, "LMSMITH_HOME": str(lmsmith_home), "COLUMNS": ""}
    res = subprocess.run([sys.executable, "-c", "import sys; from lmsmith.cli import main; sys.exit(main())",
                          "models", "list"], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr
    assert f"{name}@1" in res.stdout and "…" not in res.stdout
