"""The real default model (SmolLM2-135M-Instruct): greedy engine output equals transformers' generate."""

from __future__ import annotations

import pytest
import torch

from lmsmith.serve import LLM, SamplingParams

pytestmark = pytest.mark.slow

QUESTIONS = ["What is the capital of France? Answer in one word.", "Name three colors."]


def test_default_model_greedy_parity_with_transformers(default_model_dir):
    from transformers import AutoModelForCausalLM

    llm = LLM(str(default_model_dir), max_num_batched_tokens=32)  # several prefill chunks per prompt
    res = llm.chat([[{"role": "user", "content": q}] for q in QUESTIONS], SamplingParams(max_tokens=24, temperature=0),
                   use_tqdm=False)
    assert res[0].outputs[0].text == "The capital of France is Paris."
    hf = AutoModelForCausalLM.from_pretrained(default_model_dir, dtype=torch.float32).eval()
    for r in res:
        ids = r.prompt_token_ids
        with torch.inference_mode():
            out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=24, do_sample=False)
        assert r.outputs[0].token_ids == out[0, len(ids):].tolist()
