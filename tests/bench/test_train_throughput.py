"""bench/train/train_throughput.py on CPU (tiny preset): the loop's step and the HF baseline, one result file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_benchmark_script_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, "-m", "bench.train.train_throughput", "--preset", "tiny", "--device", "cpu",
                        "--seq-len", "64", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--baseline",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "train_throughput-tiny-cpu.json").read_text())
    assert {"benchmark", "device", "date", "command", "versions", "metrics"} <= set(res)
    m = res["metrics"]
    for key in ("tokens_per_s_full", "tokens_per_s_lora", "hf_tokens_per_s_full", "hf_tokens_per_s_lora"):
        assert m[key] > 0  # the names issue 7's result format asks for
    assert m["trainable_params_lora"] < m["trainable_params_full"]
    assert m["compile_full"] == 0 and m["fused_loss_full"] == 0  # it ran the loop's own CPU defaults
