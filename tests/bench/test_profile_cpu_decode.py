"""bench/serve/profile_cpu_decode.py runs on a tiny model and writes a result whose parts add up to the step."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from lmsmith.tiny import build_tiny

ROOT = Path(__file__).resolve().parents[2]


def test_profile_cpu_decode_on_a_tiny_int4_model(tmp_path):
    model = build_tiny(tmp_path / "m")
    out = tmp_path / "p.json"
    r = subprocess.run([sys.executable, "-m", "bench.serve.profile_cpu_decode", "--model", str(model),
                        "--method", "int4", "--lm-head", "int8", "--context", "40", "--repeats", "5", "--out", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(out.read_text())
    assert res["benchmark"] == "profile_cpu_decode" and res["workload"]["method"] == "int4"
    m = res["metrics"]
    parts = m["matmuls_ms"] + m["attention_ms"] + m["other_ops_ms"]
    assert abs(parts - m["step_ms"]) < 1e-2 and m["step_ms"] > 0 and m["matmuls_alone_ms"] > 0
