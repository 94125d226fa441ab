"""The gradient clip folded into fused AdamW's step equals clip_grad_norm_ followed by a plain AdamW step."""

import copy

import pytest
import torch

from lmsmith.train.parallelize import clip_grad_norm


def _step(model, fused: bool, max_norm: float, scale: float):
    torch.manual_seed(1)
    x = torch.randn(8, 16)
    (model(x).pow(2).sum() * scale).backward()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, weight_decay=0.1, fused=fused)
    norm = clip_grad_norm(list(model.parameters()), max_norm, opt if fused else None)
    opt.step()
    return norm, opt


@pytest.mark.parametrize("scale", [1e-3, 10.0])  # below the clip (no scaling) and far above it
def test_folded_clip_matches_clip_then_step(scale):
    torch.manual_seed(0)
    ref = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    ours = copy.deepcopy(ref)
    n_ref, _ = _step(ref, fused=False, max_norm=1.0, scale=scale)
    n_ours, opt = _step(ours, fused=True, max_norm=1.0, scale=scale)
    assert opt.grad_scale is not None  # the fused path was taken, not clip_grad_norm_
    torch.testing.assert_close(n_ours, n_ref)
    for a, b in zip(ours.parameters(), ref.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_no_clip_clears_a_stale_scale():
    model = torch.nn.Linear(4, 4)
    model(torch.randn(2, 4)).sum().backward()
    opt = torch.optim.AdamW(model.parameters(), fused=True)
    opt.grad_scale = torch.tensor(5.0)
    clip_grad_norm(list(model.parameters()), 0.0, opt)
    assert opt.grad_scale is None
