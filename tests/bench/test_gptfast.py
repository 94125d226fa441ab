"""bench/serve/_gptfast.py: the bytes a batch-1 decode step reads (the bandwidth fraction's numerator) and, where a
gpt-fast checkout sits in .peers/gpt-fast, its generate loop on a tiny shape (eager, CPU)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from bench.serve._gptfast import decode_bytes_per_token, gptfast_decode

ROOT = Path(__file__).resolve().parents[2]

SPEC = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=256)


@pytest.mark.parametrize("tied", [True, False])
def test_bytes_per_token_is_the_weights_a_step_reads_plus_the_kv_cache(tied):
    from transformers import LlamaConfig, LlamaForCausalLM

    model = LlamaForCausalLM(LlamaConfig(**SPEC, tie_word_embeddings=tied)).to(torch.bfloat16)
    # every parameter once; the input embedding only when it is the (tied) lm_head
    params = {id(p): p for p in model.parameters()}
    weights = sum(p.numel() * 2 for p in params.values())
    if not tied:
        weights -= model.model.embed_tokens.weight.numel() * 2
    assert decode_bytes_per_token(SPEC, 0) == weights
    kv_per_token = 2 * 2 * 2 * (64 // 4) * 2  # layers x (k, v) x kv heads x head dim x bf16
    assert decode_bytes_per_token(SPEC, 100) == weights + 100 * kv_per_token


@pytest.mark.skipif(not (ROOT / ".peers" / "gpt-fast" / "generate.py").exists(), reason="no gpt-fast checkout")
def test_gptfast_generate_runs_on_a_tiny_shape():
    r = gptfast_decode(ROOT / ".peers" / "gpt-fast", SPEC, list(range(10, 20)), 4, repeats=1, compile=False,
                       device="cpu")
    assert r["tok_s"] > 0 and len(r["runs_tok_s"]) == 1
