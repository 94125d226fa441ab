"""Owned CPU kernels (serve/cpu_kernels): int4 / int8 GEMV on int8 activations, their layouts, the engine's
decode step with them, and the fallback to PyTorch's kernels when they cannot be built or are turned off."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from lmsmith.quant import Int4Linear, Int8Linear
from lmsmith.serve import cpu_kernels as ck


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The kernels are opt-in: these tests turn them on (and off where they say so)."""
    monkeypatch.setenv("LMSMITH_CPU_KERNELS", "1")


def needs_kernels():
    why = ck.unavailable_reason()
    if why:
        pytest.skip(f"CPU kernels unavailable here: {why}")


def quantized_x(x: torch.Tensor, block: int) -> torch.Tensor:
    """The activation the kernels see: int8 per block of `block`, scale absmax / 127."""
    xb = x.reshape(x.shape[0], -1, block)
    d = xb.abs().amax(-1, keepdim=True) / 127
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
    # w = q * s + m: the q * s part meets the int8 activations, the offsets m the exact sum of each block of x;
    # equal up to float rounding (fp16 scale/offset in the layout)
    from lmsmith.quant.codecs import int4_zero_points

    m = (-int4_zero_points(mod.scales, mod.zeros) * mod.scales).repeat_interleave(group, 1)
    want = nn.functional.linear(quantized_x(x, group), w - m, mod.bias) + x @ m.T
    torch.testing.assert_close(y, want, atol=2e-3 * want.abs().max().item(), rtol=2e-3)
    # and close to the full-precision activations
    full = nn.functional.linear(x, w, mod.bias)
    assert ((y - full).norm() / full.norm()).item() < 2e-2


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


def test_int4_layout_round_trips():
    """The interleaved layout holds every nibble and the scale/offset pair of every (row, group)."""
    mod = int4_module(20, 64, 32, False, False)
    qpack, s, m = ck.pack_int4(mod.qweight, mod.scales, mod.zeros, 32)
    assert qpack.shape == (2, 8, 64) and s.shape == m.shape == (2, 2, 16)
    lo, hi = (qpack & 15).view(2, 8, 16, 4), (qpack >> 4).view(2, 8, 16, 4)
    q = torch.stack([lo, hi], 3).permute(0, 2, 1, 3, 4).reshape(32, 64)[:20]  # [row, k]
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
    assert "LMSMITH_CPU_KERNELS=1" in ck.unavailable_reason()
    assert ck.bind(mod, torch.float32, None) is None


def quantized_engine(tmp_path, method: str):
    from lmsmith.compress.quantize import quantize_to_dir
    from lmsmith.serve.engine import Engine
    from lmsmith.tiny import build_tiny

    src = build_tiny(tmp_path / "m")
    out = tmp_path / method
    quantize_to_dir(src, out, method, 32 if method == "int4" else None, include_lm_head=True, lm_head_method="int8")
    return Engine(str(out), dtype="float32", device="cpu", max_num_seqs=4, enable_prefix_caching=False)


@pytest.mark.parametrize("kernels", ["on", "off"])
def test_engine_decode_step_with_and_without_the_kernels(tmp_path, monkeypatch, kernels):
    """Both paths: with the kernels the lean step binds them (close to the exact general path), without them
    it binds PyTorch's kernels (equal to the general path)."""
    from test_cpu_decode import LENGTHS, TABLES, step_logits

    if kernels == "on":
        needs_kernels()
    else:
        monkeypatch.setenv("LMSMITH_CPU_KERNELS", "0")
    engine = quantized_engine(tmp_path, "int4")
    lean, general = step_logits(engine, LENGTHS, TABLES)
    bound = engine.runner.model._cpu_linears(torch.float32)
    ours = [getattr(fn, "kernel", None) is not None for fns in bound[:-1] for fn in fns] + \
        [getattr(bound[-1], "kernel", None) is not None]
    if kernels == "on":
        assert all(ours)
        assert ((lean - general).norm() / general.norm()).item() < 3e-2
        assert (lean.argmax(-1) == general.argmax(-1)).float().mean().item() >= 2 / 3
    else:
        assert not any(ours)
        torch.testing.assert_close(lean, general, atol=1e-5, rtol=1e-4)


@pytest.mark.slow
def test_default_model_int4_decode_perplexity_holds(default_model_dir, tmp_path, monkeypatch):
    """Teacher-forced decode of real text, one token per step through the lean decode step: the owned kernels'
    int8 activations cost at most 8% perplexity against PyTorch's kernels on the same int4 checkpoint (measured:
    28.93 -> 30.64, +5.9%, all of it from the int4 layers; the int8 lm_head adds nothing). A broken kernel gives
    a perplexity in the hundreds."""
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
    assert math.exp(ours) <= math.exp(ref) * 1.08, (math.exp(ref), math.exp(ours))


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
