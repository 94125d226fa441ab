"""NF4 quantization accuracy and the throughput benchmark script (CPU, tiny preset)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import torch

from lmsmith.train.nf4 import NF4_LEVELS, NF4Linear, dequantize_nf4, quantize_model_nf4, quantize_nf4

ROOT = Path(__file__).resolve().parents[2]


def test_nf4_roundtrip_error_and_packing():
    torch.manual_seed(0)
    w = torch.randn(256, 130) * 0.02  # numel not a multiple of the block
    packed, absmax = quantize_nf4(w)
    assert packed.dtype == torch.uint8 and packed.numel() == -(-w.numel() // 64) * 32  # 4 bits per weight
    back = dequantize_nf4(packed, absmax, w.shape)
    rel = ((back - w).pow(2).mean().sqrt() / w.pow(2).mean().sqrt()).item()
    assert 0.03 < rel < 0.12, rel  # NF4 on Gaussian weights: ~10% RMS error, never exact
    # each block's absmax is exact, and values on the NF4 grid survive unchanged
    grid = (NF4_LEVELS.repeat(8) * 0.5).view(2, 64)
    p2, a2 = quantize_nf4(grid)
    assert torch.equal(dequantize_nf4(p2, a2, grid.shape), grid)


def test_nf4_linear_forward_backward_close_to_fp32():
    torch.manual_seed(0)
    lin = torch.nn.Linear(128, 64)
    q = NF4Linear.from_linear(lin)
    x = torch.randn(4, 128, requires_grad=True)
    y, yq = lin(x), q(x)
    assert ((yq - y).norm() / y.norm()).item() < 0.15
    yq.sum().backward()
    torch.testing.assert_close(x.grad, q.weight.sum(0).expand(4, -1), atol=1e-5, rtol=1e-5)
    assert not any(p.requires_grad for p in q.parameters())
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8))
    assert quantize_model_nf4(model, None, torch.float32) == 2 and isinstance(model[0], NF4Linear)


def test_benchmark_script_on_cpu(tmp_path):
    r = subprocess.run([sys.executable, str(ROOT / "bench" / "train_throughput.py"), "--preset", "tiny", "--device", "cpu",
                        "--seq-len", "64", "--batch-size", "2", "--steps", "2", "--warmup", "1", "--baseline",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    res = json.loads((tmp_path / "train_throughput-tiny-cpu.json").read_text())
    assert {"benchmark", "device", "date", "command", "versions", "metrics"} <= set(res)
    m = res["metrics"]
    for key in ("tokens_per_s_full", "tokens_per_s_lora", "hf_tokens_per_s_full", "hf_tokens_per_s_lora"):
        assert m[key] > 0  # the names issue 7's result format asks for
    assert m["trainable_params_lora"] < m["trainable_params_full"]
    assert m["compile_full"] == 0 and m["fused_loss_full"] == 0  # it ran the loop's own CPU defaults
