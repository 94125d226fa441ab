"""bf16 weights with fp32 masters (train/master_weights.py): the update equals torch's AdamW on fp32 weights, the
clip folds in, checkpoints keep the masters in fp32 (exact resume), the saved model holds the fp32 masters, and
the option refuses the runs it cannot serve. The Triton kernel runs in the interpreter test and on the GPU."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lmsmith.errors import LmsmithError
from lmsmith.train.config import PretrainConfig, SFTConfig
from lmsmith.train.loop import train
from lmsmith.train.master_weights import MasterAdamW
from lmsmith.train.parallelize import clip_grad_norm
from triton_interpreter import needs_triton, run_check

from .conftest import fast


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))


def _grads(model: torch.nn.Module, step: int, scale: float) -> None:
    torch.manual_seed(100 + step)
    for p in model.parameters():
        p.grad = (torch.randn_like(p, dtype=torch.float32) * scale).to(p.dtype)


@pytest.mark.parametrize("scale", [1e-3, 10.0])  # below the clip and far above it
def test_update_equals_torch_adamw_on_fp32_weights(scale):
    ref, ours = _net(), _net()
    groups = lambda m: [{"params": [m[0].weight, m[2].weight], "weight_decay": 0.1},  # noqa: E731
                        {"params": [m[0].bias, m[2].bias], "weight_decay": 0.0}]
    want = torch.optim.AdamW(groups(ref), lr=1e-2, betas=(0.9, 0.95), foreach=False)
    opt = MasterAdamW(groups(ours), lr=1e-2, betas=(0.9, 0.95))
    assert all(p.dtype == torch.bfloat16 for p in ours.parameters())
    for step in range(5):
        _grads(ours, step, scale)
        for a, b in zip(ref.parameters(), ours.parameters()):
            a.grad = b.grad.float()  # the same bf16 gradient values
        n_ref = clip_grad_norm(list(ref.parameters()), 1.0)
        n_ours = clip_grad_norm(list(ours.parameters()), 1.0, opt)
        assert opt.grad_scale is not None  # folded into the step, not clip_grad_norm_
        torch.testing.assert_close(n_ours, n_ref)
        want.step()
        opt.step()
    for a, b in zip(ref.parameters(), ours.parameters()):
        master = opt.state[b]["master"]
        torch.testing.assert_close(master, a.detach(), rtol=1e-5, atol=1e-6)
        assert torch.equal(b.detach(), master.to(torch.bfloat16))  # the forward's weight is the rounded master


def test_state_dict_round_trip_keeps_fp32_masters():
    model = _net()
    opt = MasterAdamW(model.parameters(), lr=1e-2)
    for step in range(3):
        _grads(model, step, 1.0)
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    fresh = _net()
    opt2 = MasterAdamW(fresh.parameters(), lr=1e-2)
    opt2.load_state_dict(saved)
    for p, q in zip(model.parameters(), fresh.parameters()):
        for k in ("master", "exp_avg", "exp_avg_sq"):
            assert opt2.state[q][k].dtype == torch.float32 and torch.equal(opt2.state[q][k], opt.state[p][k])
        assert float(opt2.state[q]["step"]) == 3


def test_master_state_dict_names_tied_weights_once():
    emb = torch.nn.Embedding(10, 8)
    model = torch.nn.ModuleDict({"embed": emb, "head": torch.nn.Linear(8, 10, bias=False)})
    model["head"].weight = emb.weight  # tied, as in Llama-3.2-1B and SmolLM2
    opt = MasterAdamW(model.parameters(), lr=1e-2)
    sd = opt.master_state_dict(model)
    assert sd["embed.weight"].dtype == torch.float32 and sd["head.weight"] is sd["embed.weight"]


def test_training_saves_fp32_masters_and_refuses_what_it_cannot_serve(tiny_ref, prose, tmp_path):
    res = train(PretrainConfig(model=tiny_ref, data=[str(prose)], steps=6, precision="bf16", master_weights=True,
                               run_dir=str(tmp_path / "run"), eval_fraction=0, **fast(seq_len=32)))
    assert res.metrics["train_loss"] == res.metrics["train_loss"]  # finite, not NaN
    weights = load_file(str(next(Path(res.output_dir).glob("*.safetensors"))))
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert json.loads((Path(res.output_dir) / "config.json").read_text())["dtype"] == "float32"  # what was saved
    assert any(t.float().ne(t.to(torch.bfloat16).float()).any() for t in weights.values())  # unrounded masters
    base = dict(model=tiny_ref, data=[str(prose)], steps=2, master_weights=True, **fast(seq_len=32))
    for cfg, msg in [(PretrainConfig(**base, precision="fp32"), "computes in fp32"),
                     (PretrainConfig(**base, precision="bf16", grad_accum=2), "needs --grad-accum 1"),
                     (SFTConfig(**base, precision="bf16"), "full fine-tuning"),
                     (PretrainConfig(**base, precision="bf16", qat="int8"), "--qat")]:
        with pytest.raises(LmsmithError, match=msg):
            train(cfg)


@needs_triton
def test_kernel_equals_the_torch_update_in_the_interpreter():
    out = run_check(Path(__file__).with_name("master_weights_check.py"))
    assert out.count("ok ") == 6, out


def test_a_run_resumes_with_the_weight_layout_it_started_with(tiny_ref, prose, tmp_path, monkeypatch):
    """Checkpoints of fp32-weight runs (written before master weights became the default, or with it off) resume
    with fp32 weights even where the default would now pick master weights: same losses as never stopping."""
    import lmsmith.train.master_weights as mw
    from lmsmith.train.loop import FAULT_ENV
    from lmsmith.train.setup import resumes_with_master_weights
    from lmsmith.train.tracking import read_metrics

    kw = dict(model=tiny_ref, data=[str(prose)], steps=6, save_every=3, eval_fraction=0, precision="bf16",
              **fast(seq_len=32))
    whole = train(PretrainConfig(run_dir=str(tmp_path / "whole"), **kw))  # CPU: the default keeps fp32 weights
    monkeypatch.setenv(FAULT_ENV, "interrupt-after-step:3")
    assert train(PretrainConfig(run_dir=str(tmp_path / "cut"), **kw)).interrupted
    monkeypatch.delenv(FAULT_ENV)
    assert not resumes_with_master_weights(tmp_path / "cut")
    auto = mw.applies
    monkeypatch.setattr(mw, "applies", lambda explicit, **k: True if explicit is None else auto(explicit, **k))
    train(PretrainConfig(run_dir=str(tmp_path / "cut"), resume=True, **kw))  # the default would now say yes

    def losses(d):
        return [(r["step"], r["loss"]) for r in read_metrics(d / "metrics.jsonl") if "split" not in r]
    assert losses(tmp_path / "cut") == losses(whole.run_dir)
    # a checkpoint without the key (before this option existed) reads as fp32 weights; none yet: the default
    ckpt = tmp_path / "old" / "checkpoints" / "step-00000002"
    ckpt.mkdir(parents=True)
    (ckpt / "train_state.json").write_text(json.dumps({"step": 2}))
    assert not resumes_with_master_weights(tmp_path / "old")
    assert resumes_with_master_weights(tmp_path / "fresh")
