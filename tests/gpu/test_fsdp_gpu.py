"""NCCL/FSDP2 on real GPUs (skipped without CUDA; the multi-GPU tests need 2 GPUs).

    python -m pytest -q tests/gpu/test_fsdp_gpu.py
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from lmsmith.train.fused_loss import fused_linear_cross_entropy

two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs 2 GPUs")
COMMON = ["--seq-len", "128", "--steps", "4", "--lr", "1e-3", "--save-every", "2", "--eval-fraction", "0",
          "--no-mlflow", "--no-plot", "--batch-size", "2"]


def _env(home: Path) -> dict[str, str]:
    return dict(os.environ, LMSMITH_HOME=str(home), NCCL_NVLS_ENABLE="0", TORCH_SYMM_MEM_DISABLE_MULTICAST="1")


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "lmsmith.train.launch", *args], env=env, capture_output=True,
                       text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    return r


def _losses(run_dir: Path) -> list[float]:
    recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r["loss"] for r in recs if r.get("split") != "eval"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    words = "ten pes bezi pres velky maly cerveny dum strom reka most les".split()
    p = tmp_path_factory.mktemp("c") / "corpus.txt"
    p.write_text("\n".join(" ".join(rng.choice(words) for _ in range(60)) for _ in range(400)))
    return p


def test_fused_loss_bf16_matches_and_saves_memory():
    dev = torch.device("cuda")
    torch.manual_seed(0)
    n, h, v = 8192, 1024, 128256
    hidden = torch.randn(n, h, device=dev) * 0.5
    weight = (torch.randn(v, h, device=dev) * 0.02)
    labels = torch.randint(0, v, (n,), device=dev)
    labels[:100] = -100
    results = {}
    for fused in (False, True):
        hh, ww = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            if fused:
                loss = fused_linear_cross_entropy(hh, ww, labels, reduction="mean")
            else:
                logits = torch.nn.functional.linear(hh, ww).float()
                loss = torch.nn.functional.cross_entropy(logits, labels, ignore_index=-100)
        loss.backward()
        torch.cuda.synchronize()
        results[fused] = (loss.item(), hh.grad.float(), ww.grad.float(), torch.cuda.max_memory_allocated() - base)
        del hh, ww, loss
    (l0, gh0, gw0, m0), (l1, gh1, gw1, m1) = results[False], results[True]
    assert l1 == pytest.approx(l0, rel=2e-3)
    assert torch.nn.functional.cosine_similarity(gh0.flatten(), gh1.flatten(), dim=0) > 0.999
    assert torch.nn.functional.cosine_similarity(gw0.flatten(), gw1.flatten(), dim=0) > 0.999
    assert m1 < 0.5 * m0, (m0 / 2**30, m1 / 2**30)  # no tokens x vocab fp32 logits


@two_gpus
def test_fsdp_ddp_and_resume_on_one_gpu(tmp_path, tiny_dir, corpus):
    env = _env(tmp_path / "home")
    base = ["train", "pretrain", "--model", str(tiny_dir), "--data", str(corpus), *COMMON]
    _run([*base, "--nproc", "2", "--fsdp", "--run-dir", str(tmp_path / "fsdp")], env)
    _run([*base, "--nproc", "2", "--ddp", "--run-dir", str(tmp_path / "ddp")], env)
    _run([*base, "--nproc", "2", "--fsdp", "--no-reshard-after-forward", "--ac", "full", "--fused-loss",
          "--run-dir", str(tmp_path / "zero2")], env)
    fsdp, ddp, zero2 = (_losses(tmp_path / n) for n in ("fsdp", "ddp", "zero2"))
    assert len(fsdp) == len(ddp) == len(zero2) == 4
    assert all(torch.isfinite(torch.tensor(x)).all() for x in (fsdp, ddp, zero2))
    for a, b, c in zip(fsdp, ddp, zero2):  # bf16 compute: same math, different rounding
        assert b == pytest.approx(a, rel=3e-2) and c == pytest.approx(a, rel=3e-2)
    assert fsdp[-1] < fsdp[0]
    # a crash after step 2, resumed on one GPU from the sharded checkpoint
    resumed = tmp_path / "resumed"
    shutil.copytree(tmp_path / "fsdp", resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000004")
    shutil.rmtree(resumed / "final")
    _run(["train", "resume", str(resumed), "--nproc", "1"], env)
    r = _losses(resumed)
    assert len(r) == 4 and r[3] == pytest.approx(fsdp[3], rel=3e-2)


def test_compile_one_gpu(tmp_path, tiny_dir, corpus):
    env = _env(tmp_path / "home")
    _run(["train", "pretrain", "--model", str(tiny_dir), "--data", str(corpus), *COMMON, "--compile",
          "--fused-loss", "--ac", "selective", "--run-dir", str(tmp_path / "c")], env)
    losses = _losses(tmp_path / "c")
    assert len(losses) == 4 and losses[-1] < losses[0]


@two_gpus
def test_lora_on_fsdp_saves_a_trained_adapter(tmp_path, tiny_dir, corpus):
    from safetensors.torch import load_file

    env = _env(tmp_path / "home")
    _run(["train", "pretrain", "--model", str(tiny_dir), "--data", str(corpus), *COMMON, "--lora-r", "4",
          "--nproc", "2", "--fused-loss", "--run-dir", str(tmp_path / "lora")], env)
    adapter = load_file(tmp_path / "lora" / "final" / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().max() > 0 for k, v in adapter.items())  # B starts at zero
