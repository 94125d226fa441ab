"""bench/serve/merge_serving.py: one device run's three serving results become the issue's serve_throughput file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = [sys.executable, "-m", "bench.serve.merge_serving"]  # run from the repository root


def result(benchmark: str, device: str, metrics: dict) -> dict:
    return {"benchmark": benchmark, "device": device, "date": "2026-12-03T00:00:00+00:00", "command": f"python {benchmark}",
            "versions": {"torch": "2.11"}, "metrics": metrics}


def run(tmp_path: Path, quant_device: str = "NVIDIA H200", fresh: bool = True) -> subprocess.CompletedProcess:
    files = {"t": result("serve_throughput", "NVIDIA H200", {"decode_bs1_tok_s": 900.0}),
             "q": result("quant_engine", quant_device, {"int4_decode_bs1_tok_s": 1700.0, "fp8_decode_bs1_tok_s": 950.0,
                                                        "int4_head_int8_decode_bs1_tok_s": 1800.0}),
             "l": result("serve_load", "NVIDIA H200", {"ttft_p50_ms_c32": 40.0, "tpot_p99_ms_c32": 2.5, "other": 1})}
    for k, v in files.items():
        if fresh or k != "t":
            (tmp_path / f"{k}.json").write_text(json.dumps(v))
    return subprocess.run([*SCRIPT, "--throughput", str(tmp_path / "t.json"),
                           "--quant", str(tmp_path / "q.json"), "--load", str(tmp_path / "l.json")],
                          capture_output=True, text=True, cwd=ROOT)


def test_merge_names_metrics_as_the_issue_does(tmp_path):
    r = run(tmp_path)
    assert r.returncode == 0, r.stderr
    out = json.loads((tmp_path / "t.json").read_text())
    m = out["metrics"]
    assert m["decode_bs1_tok_s"] == 900.0 and m["int4_decode_bs1_tok_s"] == 1700.0 and m["fp8_decode_bs1_tok_s"] == 950.0
    assert m["int4_lmhead_int8_decode_bs1_tok_s"] == 1800.0
    assert m["ttft_p50_ms_c32"] == 40.0 and m["tpot_p99_ms_c32"] == 2.5 and "other" not in m
    assert out["benchmark"] == "serve_throughput" and set(out["sources"]) == {"throughput", "quant", "load"}
    assert run(tmp_path, fresh=False).returncode == 0  # merging into a merged file (a re-run of one part) repeats no command
    again = json.loads((tmp_path / "t.json").read_text())
    assert again["command"].count("python quant_engine") == 1 and again["metrics"] == m


def test_results_of_another_device_are_refused(tmp_path):
    r = run(tmp_path, quant_device="NVIDIA H100 80GB HBM3")
    assert r.returncode != 0 and "one device only" in r.stderr
    assert "int4_decode_bs1_tok_s" not in json.loads((tmp_path / "t.json").read_text())["metrics"]


def test_bad_inputs_are_one_line_errors(tmp_path):
    r = subprocess.run([*SCRIPT, "--throughput", str(tmp_path / "none.json")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "bad.json").write_text("{not json")
    r = subprocess.run([*SCRIPT, "--throughput", str(tmp_path / "bad.json")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "is not JSON" in r.stderr and "Traceback" not in r.stderr
    (tmp_path / "t.json").write_text(json.dumps({"benchmark": "x"}))
    r = subprocess.run([*SCRIPT, "--throughput", str(tmp_path / "t.json")], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode != 0 and "no \"metrics\"" in r.stderr
