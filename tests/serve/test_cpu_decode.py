"""The lean CPU decode step (`LlamaForCausalLM._forward_decode_cpu`) computes what the general path computes:
same logits for consecutive and scattered block tables, sliding windows, biases, batches, bf16 and quantized
weights (whose kernels it calls directly)."""

from __future__ import annotations

import pytest
import torch

from lmsmith.serve import SamplingParams
from lmsmith.serve.engine import Engine
from lmsmith.serve.scheduler import ScheduledSeq
from lmsmith.serve.sequence import Sequence
from lmsmith.tiny import build_tiny

# prompt lengths and block tables (block size 16): consecutive, scattered, and a lone partial block
LENGTHS = [21, 40, 5]
TABLES = [[4, 5], [11, 2, 7], [9]]


def step_logits(engine: Engine, lengths: list[int], tables: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefill each prompt into its blocks, then run one decode step through the lean and the general path."""
    r = engine.runner
    seqs = []
    for i, (n, table) in enumerate(zip(lengths, tables)):
        s = Sequence(f"s{i}", 0, [(7 * i + 3 * j) % 200 + 5 for j in range(n)], SamplingParams())
        s.block_table = list(table)
        seqs.append(s)
    r.execute([ScheduledSeq(s, 0, s.num_tokens) for s in seqs])
    for s in seqs:
        s.tokens.append(42)
    batch = [ScheduledSeq(s, s.num_tokens - 1, 1) for s in seqs]
    lean = r.execute(batch)
    r.model.lean_cpu_decode = False
    try:
        general = r.execute(batch)
    finally:
        r.model.lean_cpu_decode = True
    return lean, general


@pytest.mark.parametrize("arch,overrides", [("llama", {}), ("qwen2", {}), ("mistral", {"sliding_window": 12})],
                         ids=["llama", "qwen2-bias", "mistral-window"])
def test_lean_step_matches_the_general_path(tmp_path, arch: str, overrides: dict):
    engine = Engine(str(build_tiny(tmp_path / arch, arch, **overrides)), dtype="float32", device="cpu",
                    max_num_seqs=4, enable_prefix_caching=False)
    calls = []
    engine.runner.model._forward_decode_cpu = lambda *a, _f=engine.runner.model._forward_decode_cpu: \
        calls.append(1) or _f(*a)
    lean, general = step_logits(engine, LENGTHS, TABLES)
    assert calls, "the decode step did not take the lean path"
    assert lean.shape == general.shape == (3, engine.runner.vocab_size)
    torch.testing.assert_close(lean, general, atol=2e-5, rtol=1e-4)
    one, ref = step_logits(engine, LENGTHS[1:2], TABLES[1:2])  # batch 1 (no concatenation)
    torch.testing.assert_close(one, ref, atol=2e-5, rtol=1e-4)


def test_lean_step_in_bf16_is_close(tmp_path):
    engine = Engine(str(build_tiny(tmp_path / "m")), dtype="bfloat16", device="cpu", max_num_seqs=4,
                    enable_prefix_caching=False)
    lean, general = step_logits(engine, LENGTHS, TABLES)
    assert (lean.argmax(-1) == general.argmax(-1)).all()
    assert ((lean - general).norm() / general.norm()).item() < 2e-2


@pytest.mark.parametrize("method,group", [("int8", None), ("int4", 32)])
def test_lean_step_calls_the_quantized_kernels_directly(tmp_path, method: str, group):
    from lmsmith.compress.storage import quantize_to_dir

    src = build_tiny(tmp_path / "m")
    out = tmp_path / method
    quantize_to_dir(src, out, method, group, include_lm_head=True)
    for f in src.glob("tokenizer*"):
        (out / f.name).write_bytes(f.read_bytes())
    engine = Engine(str(out), dtype="float32", device="cpu", max_num_seqs=4, enable_prefix_caching=False)
    lean, general = step_logits(engine, LENGTHS, TABLES)
    # the kernels compute in bf16 either way; the lean step also keeps SwiGLU's product in bf16 (the down
    # projection's kernel takes bf16), so the two agree to bf16 precision
    assert (lean.argmax(-1) == general.argmax(-1)).all()
    assert ((lean - general).norm() / general.norm()).item() < 1e-2
    model = engine.runner.model
    bound = model._cpu_linears(torch.float32)
    # bound kernels, not the modules' forward: qkv, o, gate_up, down and the lm_head
    assert all(not isinstance(fn, torch.nn.Module) for fns in bound[:-1] for fn in fns) and \
        not isinstance(bound[-1], torch.nn.Module)
