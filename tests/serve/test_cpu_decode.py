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
def test_lean_step_calls_the_quantized_kernels_directly(tmp_path, monkeypatch, method: str, group):
    """PyTorch's kernels (the owned ones, which quantize activations, are tested in test_cpu_kernels.py)."""
    from lmsmith.compress.quantize import quantize_to_dir

    monkeypatch.setenv("LMSMITH_CPU_KERNELS", "0")

    src = build_tiny(tmp_path / "m")
    out = tmp_path / method
    quantize_to_dir(src, out, method, group, include_lm_head=True)
    for f in src.glob("tokenizer*"):
        (out / f.name).write_bytes(f.read_bytes())
    engine = Engine(str(out), dtype="float32", device="cpu", max_num_seqs=4, enable_prefix_caching=False)
    lean, general = step_logits(engine, LENGTHS, TABLES)
    torch.testing.assert_close(lean, general, atol=1e-5, rtol=1e-4)
    model = engine.runner.model
    bound = model._cpu_linears(torch.float32)
    # bound kernels, not the modules' forward: qkv, o, gate_up, down and the lm_head
    assert all(not isinstance(fn, torch.nn.Module) for fns in bound[:-1] for fn in fns) and \
        not isinstance(bound[-1], torch.nn.Module)


def test_batched_fresh_prefill_matches_one_call_per_prompt():
    """Equal-length first chunks share one causal SDPA call: back to back in the batch they are sliced (no
    gather), elsewhere gathered; either way each prompt gets what attending alone gives."""
    from lmsmith.serve.attention import AttentionMetadata, PrefillChunk, _batched_fresh_prefill, _prefill_chunks

    torch.manual_seed(0)
    lengths = [5, 5, 5, 7, 5, 4]  # rows 0-14: three 5s back to back; row 22: a 5 after a 7; a lone 4
    starts = [sum(lengths[:i]) for i in range(len(lengths))]
    t = sum(lengths)
    q, k, v = torch.randn(t, 4, 8), torch.randn(t, 2, 8), torch.randn(t, 2, 8)
    chunks = [PrefillChunk(s, n, 0, torch.tensor([i])) for i, (s, n) in enumerate(zip(starts, lengths))]
    meta = AttentionMetadata(slot_mapping=torch.arange(t), decode_rows=None, decode_block_tables=None,
                             decode_context_lens=None, prefills=chunks, block_size=16)
    kc = vc = torch.zeros(8, 16, 2, 8)
    want = torch.full_like(q, float("nan"))
    _prefill_chunks(q, k, v, kc, vc, want, chunks, 0.35, True, None)
    got = torch.full_like(q, float("nan"))
    rest = _batched_fresh_prefill(q, k, v, got, meta, 0.35, True)
    assert sorted(c.num_tokens for c in rest) == [4, 7]
    groups, _ = meta.fresh_groups
    assert [(n, count, type(rows).__name__) for n, count, rows in groups] == [(5, 4, "Tensor")]
    _prefill_chunks(q, k, v, kc, vc, got, rest, 0.35, True, None)
    torch.testing.assert_close(got, want)
    # the three back-to-back chunks alone: a slice of the batch
    meta.prefills, meta.fresh_groups = chunks[:3], None
    got = torch.full_like(q, float("nan"))
    assert _batched_fresh_prefill(q, k, v, got, meta, 0.35, True) == []
    assert isinstance(meta.fresh_groups[0][0][2], slice)
    torch.testing.assert_close(got[:15], want[:15])
