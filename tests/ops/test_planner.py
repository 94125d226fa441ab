"""Capacity planner: the arithmetic of SYSTEM.md, and verdicts that steer users right."""

from __future__ import annotations

import json

import pytest

from lmsmith.cli import main
from lmsmith.errors import LmsmithError
from lmsmith.ops.planner import SHAPES, Shape, load_shape, plan_serve, plan_train


def test_param_counts_match_known_models():
    assert abs(Shape.from_config(SHAPES["llama-3.2-1b"]).params() - 1.236e9) < 0.01e9
    assert abs(Shape.from_config(SHAPES["llama-3.1-8b"]).params() - 8.03e9) < 0.02e9
    assert abs(Shape.from_config(SHAPES["smollm2-135m"]).params() - 134.5e6) < 1e6


def test_kv_cache_formula_matches_system_md():
    # Llama-70B-like at 128k tokens: 80 layers x 8192 dims x 2 bytes x 2 x 128,000 / 8 (GQA) ~ 42 GB
    shape = Shape.from_config(SHAPES["llama-3.1-70b"])
    gb = shape.kv_bytes_per_token(2) * 128_000 / 1e9
    assert gb == pytest.approx(80 * 8192 * 2 * 2 * 128_000 / 8 / 1e9)
    assert 41 < gb < 43


def test_full_training_needs_16_bytes_per_param_and_fsdp_shards_it():
    shape = Shape.from_config(SHAPES["mistral-7b"])
    one = plan_train(shape, gpus=1, micro_batch=1, seq_len=512, strategy="single")
    states = sum(v for k, v in one.parts_gib.items() if k.startswith(("weights", "gradients", "adam")))
    assert states * 1024**3 / shape.params() == pytest.approx(16, rel=0.01)
    assert not one.fits and any("fsdp" in n for n in one.notes)
    four = plan_train(shape, gpus=4, micro_batch=1, seq_len=512, strategy="fsdp")
    assert four.fits and four.total_gib < one.total_gib / 3


def test_lora_qlora_and_chunked_loss_shrink_memory():
    shape = Shape.from_config(SHAPES["llama-3.1-8b"])
    full = plan_train(shape, micro_batch=2, strategy="single")
    lora = plan_train(shape, micro_batch=2, lora=True)
    qlora = plan_train(shape, micro_batch=2, qlora=True)
    assert qlora.total_gib < lora.total_gib < full.total_gib
    assert lora.trainable < 0.01 * lora.params
    plain = plan_train(shape, micro_batch=8, strategy="single")
    chunked = plan_train(shape, micro_batch=8, strategy="single", chunked_loss=True)
    assert chunked.parts_gib["logits and loss"] < plain.parts_gib["logits and loss"] / 5
    ac = plan_train(shape, micro_batch=8, strategy="single", ac="full")
    assert ac.parts_gib["activations"] < plain.parts_gib["activations"] / 4


def test_throughput_from_mfu():
    shape = Shape.from_config(SHAPES["llama-3.2-1b"])
    p = plan_train(shape, mfu=0.39, seq_len=2048, micro_batch=8)
    # the HF baseline measured 47.2k tokens/s at 39% MFU on an H100 for this shape
    assert 40_000 < p.tokens_per_s < 55_000


def test_serve_plan_and_bandwidth_bound():
    shape = Shape.from_config(SHAPES["llama-3.2-1b"])
    p = plan_serve(shape, gpu_mem_gib=80, context=8192, concurrency=4)
    assert p["fits"] and p["max_full_context_sequences"] >= 4
    assert 1000 < p["decode_bs1_tok_s_upper_bound"] < 1400  # 3.0 TB/s / 2.47 GB
    assert plan_serve(shape, weight_dtype="int4")["decode_bs1_tok_s_upper_bound"] > 3.5 * p["decode_bs1_tok_s_upper_bound"]


def test_cli_json_and_exit_codes(capsys, tiny_ref):
    assert main(["plan", "train", "--model", "llama-3.2-1b", "--micro-batch", "2", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["fits"] and data["gpus"] == 1
    assert main(["plan", "train", "--model", "llama-3.1-8b", "--gpus", "1"]) == 3
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert main(["plan", "serve", "--model", tiny_ref, "--json"]) == 0  # a registered model's config works too
    assert main(["plan", "train", "--model", "gpt-9"]) == 1
    assert "neither a shape preset" in capsys.readouterr().err
    with pytest.raises(LmsmithError):
        load_shape("nonexistent-shape")


def test_cli_memory_and_mfu_defaults_follow_the_gpu(capsys):
    import json

    from lmsmith.cli import main

    assert main(["plan", "train", "--model", "llama-3.2-1b", "--gpu", "h200", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["gpu_mem_gib"] == 139.0 and d["mfu"] == 0.5  # H200 memory; the loop's measured MFU
    kv = {}
    for gpu in ("h100", "h200"):
        assert main(["plan", "serve", "--model", "llama-3.2-1b", "--gpu", gpu, "--json"]) == 0
        kv[gpu] = json.loads(capsys.readouterr().out)["max_kv_tokens"]
    assert 1.7 < kv["h200"] / kv["h100"] < 1.9  # 139 vs 79 GiB, less the same weights


def test_plan_serve_that_does_not_fit_says_why_and_what_would(capsys):
    assert main(["plan", "serve", "--model", "llama-3.1-8b", "--context", "131072", "--concurrency", "16"]) == 3
    text = capsys.readouterr().out
    assert "on 1 x h100" in text and "DOES NOT FIT: needs 271.0 GiB per GPU" in text
    assert "--gpus 4" in text and "--concurrency 3" in text
    # each suggestion really fits
    shape = Shape.from_config(SHAPES["llama-3.1-8b"])
    assert plan_serve(shape, gpus=4, gpu_mem_gib=79, context=131072, concurrency=16)["fits"]
    assert main(["plan", "serve", "--model", "llama-3.1-8b", "--context", "131072", "--concurrency", "3"]) == 0


def test_master_weights_keep_16_bytes_per_param_and_shrink_activations(capsys):
    """bf16 weights + fp32 masters (the loop's default for full fine-tuning on one GPU): the same 16 bytes of state
    per parameter, no autocast copies, a bf16 residual stream. The 1B shape at 8 x 2048 (compile, chunked loss)
    measured 38.9 GiB with masters and 40.1 without (train_ab-h100-master.json)."""
    shape = Shape.from_config(SHAPES["llama-3.2-1b"])
    kw = dict(seq_len=2048, micro_batch=8, strategy="single", chunked_loss=True, compile=True)
    plain, master = plan_train(shape, **kw), plan_train(shape, master_weights=True, **kw)
    states = sum(v for k, v in master.parts_gib.items() if k.startswith(("weights", "gradients", "adam")))
    assert states * 1024**3 / shape.params() == pytest.approx(16, rel=0.01)
    assert "bf16 weight copies (autocast)" not in master.parts_gib
    assert master.parts_gib["activations"] < plain.parts_gib["activations"]
    assert 38.9 * 0.95 < master.total_gib < 38.9 * 1.05 and master.total_gib < plain.total_gib
    with pytest.raises(LmsmithError, match="one GPU"):
        plan_train(shape, master_weights=True, lora=True)
    assert main(["plan", "train", "--model", "llama-3.2-1b", "--micro-batch", "8", "--json"]) == 0
    assert "gradients (bf16)" in json.loads(capsys.readouterr().out)["parts_gib"]  # the CLI plans the loop's default
    assert main(["plan", "train", "--model", "llama-3.2-1b", "--no-master-weights", "--json"]) == 0
    assert "gradients (fp32)" in json.loads(capsys.readouterr().out)["parts_gib"]
