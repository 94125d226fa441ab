"""Owned CPU kernels (serve/cpu_kernels): int4 / int8 GEMV on int16 activations with their fused prologues and
epilogues, the decode-attention op, their layouts, the engine's decode step with them, and the fallback to
PyTorch's kernels when they cannot be built or are turned off (both paths run here)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmsmith.quant import Int4Linear, Int8Linear
from lmsmith.serve import cpu_kernels as ck


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """On by default; set explicitly so an outer LMSMITH_CPU_KERNELS=0 does not skip them (tests turn them off
    where they say so)."""
    monkeypatch.setenv("LMSMITH_CPU_KERNELS", "1")


def needs_kernels():
    why = ck.unavailable_reason()
    if why:
        pytest.skip(f"CPU kernels unavailable here: {why}")


def quantized_x(x: torch.Tensor, block: int) -> torch.Tensor:
    """The activation the kernels see: int16 per block of `block`, scale absmax / 32767."""
    xb = x.reshape(x.shape[0], -1, block)
    d = xb.abs().amax(-1, keepdim=True) / 32767
    q = torch.where(d > 0, torch.round(xb / torch.where(d > 0, d, 1)), 0)
    return (q * d).reshape(x.shape)


def int4_module(n: int, k: int, group: int, symmetric: bool, bias: bool) -> Int4Linear:
    torch.manual_seed(n + k + group)
    lin = nn.Linear(k, n, bias=bias)
    return Int4Linear.from_linear(lin, group_size=group, symmetric=symmetric)


@pytest.mark.parametrize("n,k,group,symmetric,bias", [(50, 64, 32, False, True), (96, 128, 64, True, False),
                                                      (16, 256, 128, False, False)])
@pytest.mark.parametrize("rows", [1, 3])
def test_int4_gemv_matches_the_dequantized_weight(n, k, group, symmetric, bias, rows):
    needs_kernels()
    mod = int4_module(n, k, group, symmetric, bias)
    fn = ck.bind(mod, torch.float32, None)
    assert fn is not None
    x = torch.randn(rows, k)
    y = fn(x)
    w = mod.dequantize(torch.float32)
    # w = q * s + m: the q * s part meets the int16 activations, the offsets m the exact sum of each block of x;
    # equal up to float rounding (fp16 scale/offset in the layout)
    from lmsmith.quant.codecs import int4_zero_points

    m = (-int4_zero_points(mod.scales, mod.zeros) * mod.scales).repeat_interleave(group, 1)
    want = nn.functional.linear(quantized_x(x, group), w - m, mod.bias) + x @ m.T
    torch.testing.assert_close(y, want, atol=2e-3 * want.abs().max().item(), rtol=2e-3)
    # and, int16 activations, as close to the full-precision product as fp16 scales allow
    full = nn.functional.linear(x, w, mod.bias)
    assert ((y - full).norm() / full.norm()).item() < 1e-3


@pytest.mark.parametrize("n,k,bias", [(50, 64, True), (4097, 96, False)])
@pytest.mark.parametrize("rows", [1, 2])
def test_int8_gemv_matches_the_dequantized_weight(n, k, bias, rows):
    needs_kernels()
    torch.manual_seed(n)
    mod = Int8Linear.from_linear(nn.Linear(k, n, bias=bias))
    fn = ck.bind(mod, torch.float32, None)
    x = torch.randn(rows, k) * 3
    y = fn(x)
    w = mod.dequantize(torch.float32)
    want = nn.functional.linear(quantized_x(x, 32), w, mod.bias)
    torch.testing.assert_close(y, want, atol=1e-4 * want.abs().max().item(), rtol=1e-4)
    # bf16 activations come back in bf16
    assert fn(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("kind", ["int4", "int8"])
def test_fused_prologue_and_epilogue_match_the_separate_ops(kind):
    """RMSNorm (norm=w), SiLU(gate) * up (act=1) folded into the input, bias + residual into the output: the
    same as running PyTorch's ops around the plain kernel."""
    needs_kernels()
    k, n = 128, 48
    mod = int4_module(n, k, 32, False, True) if kind == "int4" else Int8Linear.from_linear(nn.Linear(k, n))
    fn = ck.bind(mod, torch.float32, None)
    torch.manual_seed(1)
    x, w, res = torch.randn(3, k) * 2, torch.rand(k) + 0.5, torch.randn(3, n)
    x[:, 5] = 40.0  # an outlier channel, as SmolLM2's hidden states have
    ref = fn(nn.functional.rms_norm(x, (k,), w, 1e-5))
    got = fn.fused(x, w, 1e-5)
    torch.testing.assert_close(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)
    gu = torch.randn(3, 2 * k)
    ref = fn(nn.functional.silu(gu[:, :k]) * gu[:, k:]) + res
    got = fn.fused(gu, None, 0.0, 1, res)
    torch.testing.assert_close(got, ref, atol=1e-4 * ref.abs().max().item(), rtol=1e-4)
    # and the fused input against the full-precision product: int16 activations lose nothing visible
    full = nn.functional.linear(nn.functional.rms_norm(x, (k,), w, 1e-5), mod.dequantize(torch.float32), mod.bias)
    assert ((fn.fused(x, w, 1e-5) - full).norm() / full.norm()).item() < 1e-3


def rope_reference(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    from lmsmith.serve.llama import rotate_half

    return x * cos[:, None] + rotate_half(x) * sin[:, None]


@pytest.mark.parametrize("head_dim,window", [(16, None), (8, 5), (64, None)])
def test_decode_attention_matches_pytorch(head_dim, window):
    """RoPE + K/V write + attention in one op against the lean step's PyTorch ops: three rows with their own
    (non-consecutive) block tables and lengths, grouped-query heads, a sliding window."""
    from lmsmith.serve.attention import decode_attention_cpu, write_kv

    needs_kernels()
    torch.manual_seed(head_dim)
    heads, kv_heads, bs, blocks = 4, 2, 4, 12
    k_cache, v_cache = torch.randn(blocks, bs, kv_heads, head_dim), torch.randn(blocks, bs, kv_heads, head_dim)
    tables = [[3, 7, 1], [0, 2, 0], [11, 4, 5]]
    lens = [9, 5, 12]  # context including the new token
    slots = torch.tensor([t[(n - 1) // bs] * bs + (n - 1) % bs for t, n in zip(tables, lens)])
    qkv = torch.randn(3, (heads + 2 * kv_heads) * head_dim)
    cos, sin = torch.randn(3, head_dim), torch.randn(3, head_dim)
    k2, v2 = k_cache.clone(), v_cache.clone()
    o = ck.decode_attention(qkv, cos, sin, k2, v2, slots, torch.tensor(tables), torch.tensor(lens), heads, kv_heads,
                            head_dim, head_dim ** -0.5, window, bs)
    q, k, v = qkv.split([heads * head_dim, kv_heads * head_dim, kv_heads * head_dim], -1)
    q = rope_reference(q.view(3, heads, head_dim), cos, sin)
    k = rope_reference(k.reshape(3, kv_heads, head_dim), cos, sin)
    write_kv(k_cache, v_cache, k, v.reshape(3, kv_heads, head_dim), slots)
    torch.testing.assert_close(k2, k_cache, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(v2, v_cache)
    kf, vf = k_cache.view(-1, kv_heads, head_dim), v_cache.view(-1, kv_heads, head_dim)
    want = torch.stack([decode_attention_cpu(q[r], kf, vf, tables[r], lens[r], head_dim ** -0.5, window, bs)
                        for r in range(3)]).view(3, -1)
    torch.testing.assert_close(o, want, atol=1e-5, rtol=1e-4)


def test_int4_layout_round_trips():
    """The interleaved layout holds every nibble and the scale/offset pair of every (row, group)."""
    mod = int4_module(20, 64, 32, False, False)
    qpack, s, m = ck.pack_int4(mod.qweight, mod.scales, mod.zeros, 32)
    assert qpack.shape == (2, 8, 64) and s.shape == m.shape == (2, 2, 16)
    b = qpack.view(2, 8, 16, 4).long()  # bytes (q0|q2<<4, q4|q6<<4, q1|q3<<4, q5|q7<<4) of each row
    lo, hi = b & 15, b >> 4
    nib = torch.stack([lo[..., 0], lo[..., 2], hi[..., 0], hi[..., 2], lo[..., 1], lo[..., 3], hi[..., 1],
                       hi[..., 3]], -1)  # [nb, k/8, row, 8]
    q = nib.transpose(1, 2).reshape(32, 64)[:20].to(torch.uint8)  # [row, k]
    from lmsmith.quant import unpack_int4

    assert torch.equal(q, unpack_int4(mod.qweight))
    w = (q.float().view(20, 2, 32) * s.float().transpose(1, 2).reshape(32, 2)[:20, :, None]
         + m.float().transpose(1, 2).reshape(32, 2)[:20, :, None]).reshape(20, 64)
    torch.testing.assert_close(w, mod.dequantize(torch.float32), atol=2e-3, rtol=2e-3)


def test_large_batches_go_to_the_fallback():
    needs_kernels()
    mod = int4_module(32, 64, 32, False, False)
    seen = []
    fn = ck.bind(mod, torch.float32, lambda x: seen.append(x.shape[0]) or torch.zeros(x.shape[0], 32))
    fn(torch.randn(ck.MAX_ROWS, 64))
    fn(torch.randn(ck.MAX_ROWS + 1, 64))
    assert seen == [ck.MAX_ROWS + 1]


def test_no_compiler_or_switched_off_keeps_pytorchs_kernels(monkeypatch):
    mod = int4_module(32, 64, 32, False, False)
    monkeypatch.setattr(ck, "_STATE", {})
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert "no C++ compiler" in ck.unavailable_reason()
    assert ck.bind(mod, torch.float32, None) is None
    monkeypatch.setenv("LMSMITH_CPU_KERNELS", "0")
    assert "LMSMITH_CPU_KERNELS=0" in ck.unavailable_reason()
    assert ck.bind(mod, torch.float32, None) is None


def quantized_engine(tmp_path, method: str, lm_head: bool = True):
    from lmsmith.compress.quantize import quantize_to_dir
    from lmsmith.serve.engine import Engine
    from lmsmith.tiny import build_tiny

    src = build_tiny(tmp_path / "m")
    out = tmp_path / method
    quantize_to_dir(src, out, method, 32 if method == "int4" else None, include_lm_head=lm_head,
                    lm_head_method="int8" if lm_head else None)
    return Engine(str(out), dtype="float32", device="cpu", max_num_seqs=4, enable_prefix_caching=False)


@pytest.mark.parametrize("kernels,lm_head", [("on", True), ("on", False), ("off", True)])
def test_engine_decode_step_with_and_without_the_kernels(tmp_path, monkeypatch, kernels, lm_head):
    """Both paths: with the kernels the lean step runs as one fused call (close to the exact general path; a float
    lm_head runs after it), without them it binds PyTorch's kernels (equal to the general path)."""
    from test_cpu_decode import LENGTHS, TABLES, step_logits

    if kernels == "on":
        needs_kernels()
    else:
        monkeypatch.setenv("LMSMITH_CPU_KERNELS", "0")
    engine = quantized_engine(tmp_path, "int4", lm_head)
    model = engine.runner.model
    fused_steps = []
    real = model._forward_decode_cpu_fused
    monkeypatch.setattr(model, "_forward_decode_cpu_fused", lambda *a: fused_steps.append(1) or real(*a))
    lean, general = step_logits(engine, LENGTHS, TABLES)
    bound = model._cpu_linears(torch.float32)
    ours = [getattr(fn, "kernel", None) is not None for fns in bound[:-1] for fn in fns] + \
        ([getattr(bound[-1], "kernel", None) is not None] if lm_head else [])
    if kernels == "on":  # the whole step in the fused kernels (the general path rounds activations to bf16)
        assert all(ours) and fused_steps
        assert ((lean - general).norm() / general.norm()).item() < 1e-2
        assert (lean.argmax(-1) == general.argmax(-1)).all()
    else:
        assert not any(ours) and not fused_steps
        torch.testing.assert_close(lean, general, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_default_model_int4_decode_perplexity_holds(default_model_dir, tmp_path, monkeypatch):
    """Teacher-forced decode of real text, one token per step through the lean decode step: the owned kernels
    (int16 activations, the fused decode step) stay within 1% perplexity of PyTorch's kernels on the same int4
    checkpoint (round 2's int8 activations cost +5.9%: 28.93 -> 30.64). A broken kernel gives a perplexity in
    the hundreds."""
    import math

    from lmsmith.compress.quantize import quantize_to_dir
    from lmsmith.models import load_tokenizer
    from lmsmith.serve import SamplingParams
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.scheduler import ScheduledSeq
    from lmsmith.serve.sequence import Sequence

    needs_kernels()
    out = tmp_path / "int4"
    quantize_to_dir(default_model_dir, out, "int4", 64, include_lm_head=True, lm_head_method="int8")
    text = ("The lighthouse stood on the rocks at the edge of the bay. Every night the keeper climbed the stairs, "
            "lit the lamp and watched the ships pass in the dark. One morning he found a bottle on the beach with "
            "a letter inside, written by a girl who lived across the sea.")
    ids = load_tokenizer(str(default_model_dir))(text)["input_ids"][:96]

    def nll(flag: str) -> float:
        monkeypatch.setenv("LMSMITH_CPU_KERNELS", flag)
        r = Engine(str(out), dtype="float32", device="cpu", max_num_seqs=1, enable_prefix_caching=False).runner
        s = Sequence("s", 0, ids[:1], SamplingParams())
        s.block_table = list(range(-(-len(ids) // 16)))
        logits = [r.execute([ScheduledSeq(s, 0, 1)])[0]]
        for i in range(1, len(ids) - 1):
            s.tokens.append(ids[i])
            logits.append(r.execute([ScheduledSeq(s, i, 1)])[0])
        lp = torch.log_softmax(torch.stack(logits).float(), -1)
        return -lp[torch.arange(len(ids) - 1), torch.tensor(ids[1:])].mean().item()

    ref, ours = nll("0"), nll("1")
    print(f"perplexity: PyTorch's kernels {math.exp(ref):.3f}, ours {math.exp(ours):.3f}")
    assert abs(math.exp(ours) / math.exp(ref) - 1) <= 0.01, (math.exp(ref), math.exp(ours))


def test_the_build_uses_the_best_instruction_set_of_this_cpu():
    """-march=native on an AVX-512 VNNI CPU gives the VNNI path (LMSMITH_CPU_KERNELS_MARCH builds the others)."""
    import os

    needs_kernels()
    march = os.environ.get("LMSMITH_CPU_KERNELS_MARCH", "native")
    flags = set(ck._cpu_flags().split())
    if march == "x86-64-v3":
        want = "avx2"
    elif march == "x86-64":
        want = "portable"
    elif {"avx512f", "avx512bw", "avx512_vnni"} <= flags:
        want = "avx512-vnni"
    elif {"avx2", "f16c", "fma"} <= flags:
        want = "avx2"
    else:
        want = "portable"
    assert ck.isa() == want
