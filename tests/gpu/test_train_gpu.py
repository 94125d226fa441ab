"""Training on one CUDA GPU: bf16 autocast, LoRA and QLoRA (NF4 on CUDA), MFU and peak memory logged."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from lmsmith.train.config import PretrainConfig, SFTConfig
from lmsmith.train.loop import train
from lmsmith.train.nf4 import NF4Linear, dequantize_nf4, quantize_nf4
from lmsmith.train.tracking import read_metrics

PROSE = Path(__file__).resolve().parents[1] / "train" / "data" / "prose.txt"


def chat_file(tmp_path: Path) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                          {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]} for i in range(16)]
    p = tmp_path / "chat.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_master_weights_default_on_cuda_tracks_fp32_weights(tiny_ref, tmp_path, monkeypatch):
    """The CUDA default for full fine-tuning (bf16 weights, fp32 masters, the Triton update) against fp32 weights
    under autocast: it is taken, it learns, and it ends within bf16 noise of the fp32-weight run."""
    from lmsmith.train.master_weights import MasterAdamW

    taken = []
    step = MasterAdamW.step
    monkeypatch.setattr(MasterAdamW, "step", lambda self, *a: taken.append(1) or step(self, *a))
    curves = {}
    for flag in ("1", "0"):
        monkeypatch.setenv("LMSMITH_MASTER_WEIGHTS", flag)
        res = train(PretrainConfig(model=tiny_ref, data=[str(PROSE)], steps=30, seq_len=64, batch_size=8, lr=5e-3,
                                   mlflow=False, run_dir=str(tmp_path / flag), eval_fraction=0))
        curves[flag] = [r["loss"] for r in read_metrics(res.run_dir / "metrics.jsonl") if "split" not in r]
        if flag == "1":
            assert len(taken) == 30
    assert curves["1"][-1] < 0.8 * curves["1"][0], curves["1"]
    assert abs(curves["1"][-1] - curves["0"][-1]) < 0.1 * curves["0"][-1], (curves["1"][-1], curves["0"][-1])


def test_pretrain_bf16_on_cuda(tiny_ref, tmp_path):
    res = train(PretrainConfig(model=tiny_ref, data=[str(PROSE)], steps=30, seq_len=64, batch_size=8, lr=5e-3,
                               mlflow=False, run_dir=str(tmp_path / "run"), eval_fraction=0.1))
    recs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if "split" not in r]
    assert recs[-1]["loss"] < recs[0]["loss"]
    assert "peak_mem_gb" in recs[-1]


@pytest.mark.parametrize("qlora", [False, True])
def test_lora_and_qlora_on_cuda(tiny_ref, tmp_path, qlora, registry):
    res = train(SFTConfig(model=tiny_ref, data=[str(chat_file(tmp_path))], lora_r=8, qlora=qlora, steps=8, seq_len=128,
                          batch_size=4, lr=5e-3, mlflow=False, run_dir=str(tmp_path / "run"), output_name="g"))
    recs = [r["loss"] for r in read_metrics(res.run_dir / "metrics.jsonl") if "split" not in r]
    assert recs[-1] < recs[0]
    assert registry.get(res.ref).kind == "adapter"


def test_nf4_on_cuda_matches_cpu():
    w = torch.randn(64, 256) * 0.02
    p, a = quantize_nf4(w)
    pc, ac = quantize_nf4(w.cuda())
    assert torch.equal(p, pc.cpu())
    torch.testing.assert_close(dequantize_nf4(pc, ac, w.shape).cpu(), dequantize_nf4(p, a, w.shape))
    lin = NF4Linear.from_linear(torch.nn.Linear(256, 64).cuda(), torch.bfloat16)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = lin(torch.randn(2, 256, device="cuda"))
    assert y.shape == (2, 64) and torch.isfinite(y).all()


def test_flex_document_masks_match_each_document_alone():
    """The CUDA path of --no-cross-doc-attention: a flex-attention BlockMask, no dense T x T mask."""
    import numpy as np

    from lmsmith.data.packing import PackedRows
    from lmsmith.tiny import tiny_model
    from lmsmith.train.attention import DocumentMasks, collate_docs, doc_mask_mode, use_flex_attention

    assert doc_mask_mode(torch.device("cuda")) == "flex"
    lengths = [70, 120, 66]  # 256 tokens: two flex blocks of 128, documents crossing the block edge
    rng = np.random.default_rng(0)
    docs = [rng.integers(5, 400, n).tolist() for n in lengths]
    rows = PackedRows(np.asarray(sum(docs, []), dtype=np.uint16), np.cumsum([0] + lengths[:-1]), 256,
                      cross_doc_attention=False)
    inputs = DocumentMasks("flex")({k: v.cuda() for k, v in collate_docs([rows[0]]).items()})
    assert type(inputs["attention_mask"]).__name__ == "BlockMask"
    model = tiny_model("llama").cuda().eval()
    with torch.no_grad():
        alone = [model(input_ids=torch.tensor([d], device="cuda")).logits[0] for d in docs]
        use_flex_attention(model)
        packed = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                       position_ids=inputs["position_ids"]).logits[0]
    start = 0
    for d, a in zip(docs, alone):
        torch.testing.assert_close(packed[start:start + len(d)], a, atol=2e-4, rtol=2e-4)
        start += len(d)


def test_packed_pretraining_without_cross_doc_attention_on_cuda(tiny_ref, tmp_path):
    """Default CUDA speed options (compile, fused loss) with flex document masks, through the loop."""
    res = train(PretrainConfig(model=tiny_ref, data=[str(PROSE)], steps=12, seq_len=128, batch_size=4, lr=5e-3,
                               mlflow=False, run_dir=str(tmp_path / "run"), eval_fraction=0.1,
                               cross_doc_attention=False, log_every=4))
    recs = [r for r in read_metrics(res.run_dir / "metrics.jsonl") if "split" not in r]
    assert [r["step"] for r in recs] == list(range(1, 13))
    assert recs[-1]["loss"] < recs[0]["loss"] and "eval_loss" in res.metrics


@pytest.mark.parametrize("master", [False, True])
def test_training_step_never_waits_for_the_gpu(tiny_ref, master):
    """forward_backward + optimizer step with the CUDA defaults (compile, fused loss) make no host-device
    sync: torch raises on any synchronizing call under sync_debug_mode 'error'.

    HF's own mask code would sync once per forward (`find_packed_sequence_indices` ends in `.all()`; see
    bench/results/train_profile_notes.md): build_model switches the model to mask-free causal attention
    (train/attention.py), so transformers builds no mask and makes no such check."""
    from lmsmith.train import distributed as D
    from lmsmith.train.fused_loss import FusedCausalLMLoss
    from lmsmith.train.loop import apply_update, forward_backward
    from lmsmith.train.model import build_model, build_optimizer

    cfg = PretrainConfig(model=tiny_ref, data=[str(PROSE)], lr=1e-3, warmup_steps=0)
    built = build_model(cfg)
    assert built.model.config._attn_implementation == "lmsmith_causal"
    model, head = D.prepare_model(built.model, D.DistEnv(device=built.device), compile=True, fused_loss=True)
    opt, sched = build_optimizer(model, cfg, 10, built.device, master=bool(master))
    objective = FusedCausalLMLoss(head)
    amp = lambda: torch.autocast("cuda", dtype=torch.bfloat16)  # noqa: E731
    ids = torch.randint(0, 200, (4, 64)).pin_memory()
    batch = {"input_ids": ids, "labels": ids}
    for _ in range(2):  # compile first
        forward_backward(model, objective, [batch], built.device, amp, 1.0)
        apply_update(opt, sched)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, gn = forward_backward(model, objective, [batch], built.device, amp, 1.0)
        apply_update(opt, sched)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert loss.is_cuda and torch.isfinite(loss) and torch.isfinite(gn)
