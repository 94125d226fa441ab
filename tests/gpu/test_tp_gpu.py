"""Tensor parallelism on 2 GPUs (NCCL, CUDA graphs with the all-reduces inside) against one GPU."""

from __future__ import annotations

import pytest
import torch

if torch.cuda.device_count() < 2:
    pytest.skip("needs 2 CUDA GPUs", allow_module_level=True)

from lmsmith.serve import LLM, SamplingParams  # noqa: E402
from lmsmith.tiny import build_tiny  # noqa: E402

PROMPTS = ["the quick brown fox", "hello", "one two three four five six seven eight nine ten " * 4,
           "tensor parallel", "a b c d e f", "x" * 40, "serving on two GPUs", "z"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    # big enough that the shards do real work, small enough to build in a second; heads/KV heads divisible by 2
    return build_tiny(tmp_path_factory.mktemp("tp") / "m", "llama", hidden_size=512, intermediate_size=1408,
                      num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=4)


def run(model_dir, dtype: str, tp: int, params: SamplingParams):
    with LLM(str(model_dir), dtype=dtype, tensor_parallel_size=tp, max_num_seqs=8, max_model_len=256) as llm:
        res = llm.generate(PROMPTS, params, use_tqdm=False)
        runner = llm.engine.runner
        info = {"kv_per_block": runner.kv_bytes_per_block(16), "graphs": runner.graphs is not None,
                "device": str(runner.device)}
    return res, info


def test_tp2_matches_tp1_fp32(model_dir):
    sp = SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True)
    ref, one = run(model_dir, "float32", 1, sp)
    out, two = run(model_dir, "float32", 2, sp)
    assert [r.outputs[0].token_ids for r in out] == [r.outputs[0].token_ids for r in ref]
    assert two["kv_per_block"] * 2 == one["kv_per_block"]  # each GPU caches half of the KV heads
    assert two["graphs"], "decode CUDA graphs (with NCCL all-reduce) were not captured"


def test_tp2_bf16_close_to_tp1(model_dir):
    """bf16 sums the two partial products in a different order than one GPU's matmul, so logits differ by bf16
    rounding (~1e-2) and a near-tie between the top two tokens of this random model can flip. Checked: the top
    token's logprob agrees closely for every prompt and most greedy continuations are identical."""
    sp = SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True, logprobs=True)
    ref, _ = run(model_dir, "bfloat16", 1, sp)
    out, two = run(model_dir, "bfloat16", 2, sp)
    for a, b in zip(ref, out):
        la, lb = a.outputs[0].logprobs[0], b.outputs[0].logprobs[0]
        if la["token_id"] == lb["token_id"]:
            assert abs(la["logprob"] - lb["logprob"]) < 0.05
    same = sum(a.outputs[0].token_ids == b.outputs[0].token_ids for a, b in zip(ref, out))
    first = sum(a.outputs[0].token_ids[0] == b.outputs[0].token_ids[0] for a, b in zip(ref, out))
    assert first >= len(PROMPTS) - 1 and same >= len(PROMPTS) // 2, (first, same)
    assert two["graphs"]
