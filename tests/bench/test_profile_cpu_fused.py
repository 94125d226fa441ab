"""bench/serve/profile_cpu_fused.py runs on a tiny model (where our CPU kernels build) and writes its parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmsmith.serve import cpu_kernels
from lmsmith.tiny import build_tiny

ROOT = Path(__file__).resolve().parents[2]


def test_profile_cpu_fused_on_a_tiny_model(tmp_path):
    why = cpu_kernels.unavailable_reason()
    if why:
        pytest.skip(f"CPU kernels unavailable here: {why}")
    model = build_tiny(tmp_path / "m")
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-m", "bench.serve.profile_cpu_fused", "--model", str(model), "--context", "48",
                        "--repeats", "1", "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    m = res["metrics"]
    assert res["benchmark"] == "profile_cpu_fused" and res["workload"]["isa"] == cpu_kernels.isa()
    assert m["decode_forward_ms"] > 0 and m["engine_step_ms"] >= m["decode_forward_ms"] * 0.5
    assert 0 < m["step_gemv_share_of_parts"] <= 1 and m["layer_sum_of_parts_us"] > m["attention_rope_kv_us"]
