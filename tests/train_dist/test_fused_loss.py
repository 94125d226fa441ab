"""The chunked linear + cross-entropy gives the plain path's loss and gradients (fp32 tolerance)."""

import pytest
import torch
import torch.nn.functional as F

from lmsmith.errors import LmsmithError
from lmsmith.train.fused_loss import (
    FusedCausalLMLoss,
    fused_linear_cross_entropy,
    install_fused_head,
    remove_fused_head,
)
from lmsmith.train.objectives import CausalLMLoss


def _plain(h, w, y, b=None, reduction="sum"):
    logits = F.linear(h, w, b).float()
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1), ignore_index=-100, reduction=reduction)


@pytest.mark.parametrize("chunk", [1, 7, 64, 10_000])
@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_matches_plain_loss_and_grads(chunk, reduction):
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 11, 16, generator=g, dtype=torch.float64)
    w = torch.randn(50, 16, generator=g, dtype=torch.float64)
    b = torch.randn(50, generator=g, dtype=torch.float64)
    y = torch.randint(0, 50, (3, 11), generator=g)
    y[0, :4] = -100  # ignored positions (prompt tokens, padding)
    y[2, -1] = -100
    h1, w1, b1 = (t.clone().requires_grad_() for t in (h, w, b))
    h2, w2, b2 = (t.clone().requires_grad_() for t in (h, w, b))
    ref = _plain(h1, w1, y, b1, reduction)
    got = fused_linear_cross_entropy(h2, w2, y, bias=b2, chunk_size=chunk, reduction=reduction)
    (ref * 1.7).backward()
    (got * 1.7).backward()  # a non-unit upstream gradient is applied
    assert torch.allclose(got.double(), ref.double(), rtol=1e-6, atol=1e-8)
    for a, c in ((h1, h2), (w1, w2), (b1, b2)):
        assert torch.allclose(a.grad, c.grad, rtol=1e-5, atol=1e-5)  # fp32 softmax in both


def test_fp32_and_frozen_weight():
    torch.manual_seed(1)
    h = torch.randn(2, 9, 8, requires_grad=True)
    w = torch.randn(30, 8)  # frozen head (LoRA): no weight gradient computed
    y = torch.randint(0, 30, (2, 9))
    ref = _plain(h, w, y)
    (gref,) = torch.autograd.grad(ref, h)
    got = fused_linear_cross_entropy(h, w, y, chunk_size=4)
    (ggot,) = torch.autograd.grad(got, h)
    assert torch.allclose(got, ref, rtol=1e-5)
    assert torch.allclose(ggot, gref, rtol=1e-4, atol=1e-6)


def test_all_ignored_gives_zero():
    h = torch.randn(1, 5, 4, requires_grad=True)
    w = torch.randn(10, 4, requires_grad=True)
    y = torch.full((1, 5), -100)
    loss = fused_linear_cross_entropy(h, w, y, reduction="mean")
    loss.backward()
    assert loss.item() == 0.0 and h.grad.abs().sum() == 0


def test_model_objective_matches_plain(tiny_dir):
    """On a real (tiny) HF model the fused head gives the plain objective's loss and gradients."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    batch = {"input_ids": torch.randint(3, 200, (2, 24)), "attention_mask": torch.ones(2, 24, dtype=torch.long)}
    batch["labels"] = batch["input_ids"].clone()
    batch["labels"][1, :10] = -100
    grads = []
    losses = []
    for fused in (False, True):
        model = AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
        obj = FusedCausalLMLoss(install_fused_head(model, chunk_size=5)) if fused else CausalLMLoss()
        loss = obj(model, batch)
        loss.backward()
        losses.append(loss.item())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        if fused:
            remove_fused_head(model)
            assert type(model.get_output_embeddings()).__name__ == "Linear"
    assert losses[1] == pytest.approx(losses[0], rel=1e-5)
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], rtol=1e-3, atol=1e-6), n


def test_softcapping_refused():
    class Cfg:
        final_logit_softcapping = 30.0

    m = torch.nn.Module()
    m.config = Cfg()
    with pytest.raises(LmsmithError, match="soft-capping"):
        install_fused_head(m)


def test_compile_friendly_chunk_math_matches_the_in_place_one():
    """The chunk kernel compiled on CUDA is the same math as the eager in-place path (checked eagerly here)."""
    from lmsmith.train.fused_loss import _chunk_grad_inplace, _chunk_grad_pure

    torch.manual_seed(0)
    logits, labels = torch.randn(9, 37) * 3, torch.randint(0, 37, (9,))
    labels[[2, 5]] = -100
    loss_a, g_a = _chunk_grad_pure(logits, labels, -100, True)
    loss_b, g_b = _chunk_grad_inplace(logits.clone(), labels, -100, True)
    torch.testing.assert_close(loss_a, loss_b)
    torch.testing.assert_close(g_a, g_b)
    assert g_a[2].abs().sum() == 0 and _chunk_grad_pure(logits, labels, -100, False)[1] is None
