"""NF4 quantization: round-trip error, packing, and the NF4 linear against float32."""

from __future__ import annotations

import torch

from lmsmith.train.nf4 import NF4_LEVELS, NF4Linear, dequantize_nf4, quantize_model_nf4, quantize_nf4


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
