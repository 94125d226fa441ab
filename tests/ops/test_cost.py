"""`lmsmith plan cost`: price per million tokens from measured tokens/s, bf16 vs int8/int4/fp8."""

from __future__ import annotations

import json

import pytest

from lmsmith.cli import main
from lmsmith.errors import LmsmithError
from lmsmith.ops.cost import parse_price, plan_cost, read_results
from lmsmith.ops.planner import load_shape


def test_parse_price():
    assert parse_price("2.5/h") == 2.5
    assert parse_price("$3") == 3.0
    assert parse_price("0.05/min") == pytest.approx(3.0)
    assert parse_price("1800/month") == pytest.approx(2.5)
    with pytest.raises(LmsmithError, match="price"):
        parse_price("cheap")


def test_cost_math_and_fewer_cards():
    name, shape = load_shape("llama-3.1-70b")
    res = plan_cost(name, shape, gpu="h100", price_per_gpu_hour=2.5, tokens_per_s=1000.0, results=[])
    rows = {r["format"]: r for r in res["formats"]}
    bf16 = rows["bf16"]
    # $/M output = GPUs x $/h / (tok/s x 3600) x 1e6
    assert bf16["usd_per_m_output"] == pytest.approx(bf16["gpus"] * 2.5 / (1000 * 3600) * 1e6, rel=1e-3)
    assert rows["fp8"]["gpus"] < bf16["gpus"] and rows["int4"]["gpus"] <= rows["fp8"]["gpus"]  # fewer cards
    assert rows["fp8"]["cost_vs_bf16"] < 0.75  # without measured speedups: estimated from bytes, never slower
    assert rows["fp8"]["usd_per_m_input"] < bf16["usd_per_m_input"]  # fp8 doubles the prefill peak


def test_measured_results_are_used(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({
        "benchmark": "serve_load", "device": "NVIDIA H100 80GB HBM3", "command": "python bench/serve_load_gpu.py",
        "workload": {"model": "random-init llama-3.2-1b"}, "metrics": {"output_tok_per_s_c32": 10000.0}}))
    (tmp_path / "b.json").write_text(json.dumps({
        "benchmark": "quant_engine", "device": "NVIDIA H100 80GB HBM3", "command": "python bench/quant_gpu.py --engine",
        "metrics": {"int4_speedup_vs_bf16": 1.5, "fp8_speedup_vs_bf16": 0.9}}))
    (tmp_path / "c.json").write_text(json.dumps({
        "benchmark": "serve_tp", "device": "2x NVIDIA H200", "metrics": {"8b_tp1_offline_tok_s": 4300.0}}))
    meas, speedups = read_results([tmp_path])
    assert speedups == {"h100": {"int4": 1.5, "fp8": 0.9}}
    name, shape = load_shape("llama-3.2-1b")
    res = plan_cost(name, shape, gpu="h100", results=[tmp_path])
    rows = {r["format"]: r for r in res["formats"]}
    assert res["bf16_output_tok_s"] == 10000.0 and "a.json" in res["throughput_source"]
    assert rows["int4"]["output_tok_s"] == 15000.0 and rows["fp8"]["output_tok_s"] == 9000.0
    assert "estimated" in rows["int8"]["speed_source"]
    name, shape = load_shape("llama-3.1-8b")  # measured on H200 only: scaled by bandwidth (3.0 / 4.3 TB/s)
    res = plan_cost(name, shape, gpu="h100", results=[tmp_path])
    assert res["bf16_output_tok_s"] == pytest.approx(3000.0) and "h200" in res["throughput_source"]
    name, shape = load_shape("llama-3.2-3b")  # nothing measured for this shape, nothing on an A100
    with pytest.raises(LmsmithError, match="no measured throughput"):
        plan_cost(name, shape, gpu="a100", results=[tmp_path])


def test_cli(capsys):
    assert main(["plan", "cost", "--gpu", "h100", "--price", "2.5/h", "--model", "llama-3.1-8b",
                 "--tokens-per-s", "2000", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert [r["format"] for r in res["formats"]] == ["bf16", "int8", "int4", "fp8"]
    assert res["formats"][0]["usd_per_m_output"] == pytest.approx(2.5 / (2000 * 3600) * 1e6, rel=1e-3)
    assert main(["plan", "cost", "--model", "llama-3.1-8b", "--tokens-per-s", "2000"]) == 0
    assert "$/M output" in capsys.readouterr().out
