"""Quantized checkpoints in the native engine: fused quantized QKV / gate-up, greedy parity with the HF path."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from lmsmith.compress.quantize import quantize_to_dir
from lmsmith.errors import LmsmithError
from lmsmith.quant import Int4Linear, Int8Linear, QuantLinear

PROMPTS = [[5, 17, 99, 240, 31], [7, 8, 9]]


def quantized_dir(src: Path, tmp_path: Path, method: str, **kw) -> Path:
    out = tmp_path / f"q-{method}-{'-'.join(f'{k}{v}' for k, v in kw.items())}"
    quantize_to_dir(src, out, method, **kw)
    return out


def hf_greedy(model_dir: Path, prompt: list[int], n: int) -> list[int]:
    from lmsmith.models import load_model

    model = load_model(str(model_dir), dtype="float32", device="cpu")
    with torch.no_grad():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=2)
    return out[0, len(prompt):].tolist()


def engine_greedy(llm, prompts: list[list[int]], n: int) -> list[list[int]]:
    from lmsmith.serve import SamplingParams

    outs = llm.generate(prompts, SamplingParams(max_tokens=n, temperature=0.0, ignore_eos=True), use_tqdm=False)
    return [o.outputs[0].token_ids for o in outs]


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("method,kw,cls", [("int8", {}, Int8Linear), ("int4", {"group_size": 32}, Int4Linear),
                                           ("int4", {"group_size": 32, "lm_head_method": "int8"}, Int4Linear)],
                         ids=["int8", "int4", "int4+int8head"])
def test_engine_runs_quantized_checkpoint_natively_with_hf_greedy_parity(tmp_path, arch, method, kw, cls):
    from lmsmith.serve import LLM
    from lmsmith.tiny import build_tiny

    src = build_tiny(tmp_path / arch, arch)
    qdir = quantized_dir(src, tmp_path, method, **kw)
    llm = LLM(str(qdir), dtype="float32", device="cpu")
    runner = llm.engine.runner
    assert runner.native, "quantized checkpoints must not fall back to transformers"
    layer = runner.model.model.layers[0]
    assert isinstance(layer.self_attn.qkv_proj, cls) and isinstance(layer.mlp.gate_up_proj, cls)
    assert isinstance(layer.self_attn.o_proj, cls) and isinstance(layer.mlp.down_proj, cls)
    if arch == "qwen2":
        assert layer.self_attn.qkv_proj.bias is not None  # Qwen2's q/k/v biases travel with the fusion
    head = runner.model.lm_head
    assert isinstance(head, Int8Linear) if "lm_head_method" in kw else type(head) is torch.nn.Linear
    # kernel layouts exist before the first step (nothing gets built inside a decode step / graph capture)
    assert all(m._packed is not None for m in runner.model.modules() if isinstance(m, QuantLinear))
    got = engine_greedy(llm, PROMPTS, 8)
    for prompt, tokens in zip(PROMPTS, got):
        assert tokens == hf_greedy(qdir, prompt, 8)


def test_engine_reads_the_stored_bytes_not_a_recast(tmp_path, tiny_dir):
    """The runner must not cast int8 weights or float32 scales to the activation dtype while loading."""
    from lmsmith.serve.weights import read_state_dict

    qdir = quantized_dir(tiny_dir, tmp_path, "int8")
    sd = read_state_dict(qdir, torch.bfloat16)
    assert sd["model.layers.0.self_attn.q_proj.qweight"].dtype == torch.int8
    assert sd["model.layers.0.self_attn.q_proj.scales"].dtype == torch.float32
    assert sd["model.embed_tokens.weight"].dtype == torch.bfloat16


def test_fp8_checkpoint_on_cpu_is_a_clear_error(tmp_path, tiny_dir):
    from lmsmith.serve import LLM

    qdir = quantized_dir(tiny_dir, tmp_path, "fp8")
    with pytest.raises(LmsmithError, match="fp8 weights need a CUDA GPU.*this checkpoint is fp8"):
        LLM(str(qdir), device="cpu")


def test_lm_head_method_is_recorded_and_validated(tmp_path, tiny_dir):
    from lmsmith.quant.format import read_spec

    qdir = quantized_dir(tiny_dir, tmp_path, "int4", lm_head_method="int8")
    spec = read_spec(qdir)
    assert spec.method == "int4" and spec.lm_head_method == "int8" and spec.include_lm_head
    assert "lm_head" in spec.modules
    with pytest.raises(LmsmithError, match="unknown quantization method 'int2'"):
        quantize_to_dir(tiny_dir, tmp_path / "bad", "int4", lm_head_method="int2")


def test_tensor_parallel_quantized_is_a_clear_error(tmp_path, tiny_dir):
    from lmsmith.serve.loader import load_runner

    qdir = quantized_dir(tiny_dir, tmp_path, "int8")
    with pytest.raises(LmsmithError, match="tensor parallelism does not shard quantized weights"):
        load_runner(str(qdir), "float32", "cpu", None, tensor_parallel_size=2)
