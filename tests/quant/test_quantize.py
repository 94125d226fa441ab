"""Weight-only quantization on CPU: tensor math, kernels vs the dequantized reference, model swap, errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lmsmith import quant as Q
from lmsmith.errors import LmsmithError
from lmsmith.quant import (
    Fp8Linear,
    Int4Linear,
    Int8Linear,
    QuantLinear,
    dequantize_fp8,
    dequantize_int4,
    dequantize_int8,
    pack_int4,
    quantize_fp8,
    quantize_int4,
    quantize_int8,
    quantize_model_,
    unpack_int4,
)
from triton_interpreter import needs_triton, run_check


def weights(n: int = 96, k: int = 256, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g) * 0.05
    w[3] *= 20  # one loud channel: per-channel / per-group scales must keep the others precise
    return w


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


# ------------------------------------------------------------------------------------ tensor math
def test_int8_error_is_at_most_half_a_step_per_channel():
    w = weights()
    q, s = quantize_int8(w)
    assert q.dtype == torch.int8 and s.shape == (w.shape[0],)
    assert q.abs().max() <= 127
    err = (dequantize_int8(q, s) - w).abs()
    assert (err <= s[:, None] / 2 + 1e-7).all()
    # the loud channel does not cost the quiet ones precision
    assert err[0].max() < err[3].max() / 5


@pytest.mark.parametrize("symmetric", [False, True])
@pytest.mark.parametrize("group_size", [32, 64, 128])
def test_int4_error_is_at_most_half_a_step_per_group(group_size: int, symmetric: bool):
    w = weights()
    packed, s, z = quantize_int4(w, group_size, symmetric)
    assert packed.dtype == torch.uint8 and packed.shape == (w.shape[0], w.shape[1] // 2)
    assert s.shape == (w.shape[0], w.shape[1] // group_size)
    assert (z is None) == symmetric
    deq = dequantize_int4(packed, s, z, group_size)
    err = (deq - w).abs().reshape(w.shape[0], -1, group_size)
    assert (err <= s[..., None] / 2 + 1e-6).all()
    assert rel_err(deq, w) < 0.12


def test_int4_asymmetric_beats_symmetric_on_shifted_weights():
    w = weights() + 0.03  # all-positive-ish groups waste half the symmetric range
    a = dequantize_int4(*quantize_int4(w, 64, False), 64)
    s = dequantize_int4(*quantize_int4(w, 64, True), 64)
    assert rel_err(a, w) < rel_err(s, w)


def test_int4_pack_round_trip_and_nibble_order():
    g = torch.Generator().manual_seed(1)
    q = torch.randint(0, 16, (7, 64), generator=g, dtype=torch.uint8)
    packed = pack_int4(q)
    assert packed.shape == (7, 32)
    assert torch.equal(unpack_int4(packed), q)
    assert packed[0, 0].item() == q[0, 0].item() | (q[0, 1].item() << 4)


def test_fp8_error_is_within_e4m3_precision():
    w = weights()
    q, s = quantize_fp8(w)
    assert q.dtype == torch.float8_e4m3fn
    deq = dequantize_fp8(q, s)
    # 3 mantissa bits: relative error <= 1/16 for normal numbers, plus the subnormal floor
    assert ((deq - w).abs() <= w.abs() / 16 + s[:, None] * 2**-9).all()


# ------------------------------------------------------------------------------------- modules
def linear(k: int = 256, n: int = 96, bias: bool = True) -> nn.Linear:
    torch.manual_seed(0)
    lin = nn.Linear(k, n, bias=bias)
    lin.weight.data = weights(n, k)
    return lin


@pytest.mark.parametrize("make", [Int8Linear.from_linear, lambda l: Int4Linear.from_linear(l, 64),
                                  lambda l: Int4Linear.from_linear(l, 32, symmetric=True)], ids=["int8", "int4", "int4sym"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fast_kernel_matches_dequantized_reference(make, dtype: torch.dtype):
    lin = linear()
    q = make(lin).to(dtype)
    x = torch.randn(2, 5, 256).to(dtype)
    with torch.no_grad():
        fast = q(x)
        q.backend = "reference"
        ref = q(x)
        dense = lin.to(dtype)(x)
    assert fast.shape == ref.shape == (2, 5, 96) and fast.dtype == dtype
    # the kernels run in bfloat16 on CPU: agree with the reference to bf16 precision
    assert rel_err(fast, ref) < 0.01
    # and the quantized layer stays close to the unquantized one
    assert rel_err(ref, dense) < (0.02 if isinstance(q, Int8Linear) else 0.15)


def test_fast_path_is_a_kernel_on_cpu():
    assert Q.has_kernel("_weight_int8pack_mm", torch.device("cpu"))
    assert Q.has_kernel("_weight_int4pack_mm_for_cpu", torch.device("cpu"))
    q = Int4Linear.from_linear(linear(), 64)
    q(torch.randn(1, 256))
    assert q._packed is not None  # the tinygemm layout was built and used
    q.to(torch.bfloat16)
    assert q._packed is None  # moving the module drops the stale layout


def test_fp8_module_reference_on_cpu_and_clear_error_in_auto():
    lin = linear()
    q = Fp8Linear.from_linear(lin).to(torch.bfloat16)
    assert q.qweight.dtype == torch.uint8  # .to(dtype) must not cast the fp8 bytes
    x = torch.randn(3, 256)
    with pytest.raises(LmsmithError, match="fp8 weights need a CUDA GPU"):
        q(x)
    q.backend = "reference"
    with torch.no_grad():
        assert rel_err(q(x.bfloat16()), lin(x)) < 0.1


# ------------------------------------------------------------------------------------- models
@pytest.fixture
def tiny_model(tiny_dir):
    from lmsmith.models import load_model

    return load_model(str(tiny_dir), dtype="float32", device="cpu")


def logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.mark.parametrize("method,tol", [("int8", 0.02), ("int4", 0.2)])
def test_quantize_model_swaps_linears_and_keeps_outputs_close(tiny_model, method: str, tol: float):
    ids = torch.randint(3, 500, (2, 24), generator=torch.Generator().manual_seed(0))
    before = logits(tiny_model, ids)
    spec = quantize_model_(tiny_model, method)
    swapped = [n for n, m in tiny_model.named_modules() if isinstance(m, QuantLinear)]
    assert sorted(swapped) == sorted(spec.modules) and len(swapped) == 14  # 2 layers x 7 projections
    assert type(tiny_model.lm_head) is nn.Linear  # kept in full precision by default
    assert not any(type(m) is nn.Linear for n, m in tiny_model.named_modules() if n != "lm_head")
    assert spec.group_size == (32 if method == "int4" else None)  # auto: 128 does not divide hidden 64
    after = logits(tiny_model, ids)
    assert rel_err(after, before) < tol
    assert tiny_model.config.quantization["method"] == method


def test_include_lm_head_and_skip(tiny_model):
    spec = quantize_model_(tiny_model, "int8", include_lm_head=True, skip=["mlp"])
    assert isinstance(tiny_model.lm_head, Int8Linear)
    assert "lm_head" in spec.modules and not any("mlp" in n for n in spec.modules)
    assert type(tiny_model.model.layers[0].mlp.down_proj) is nn.Linear


def test_bad_requests_are_clear_errors(tiny_model):
    with pytest.raises(LmsmithError, match="unknown quantization method 'int3'"):
        quantize_model_(tiny_model, "int3")
    with pytest.raises(LmsmithError, match=r"group size 128 does not divide in_features=64.*"):
        quantize_model_(tiny_model, "int4", group_size=128)
    with pytest.raises(LmsmithError) as e:
        quantize_model_(tiny_model, "int4", group_size=128)
    assert "--group-size 64" in e.value.hint
    with pytest.raises(LmsmithError, match="group size 48 is not supported"):
        quantize_model_(tiny_model, "int4", group_size=48)
    with pytest.raises(LmsmithError, match="fp8 weights need a CUDA GPU"):
        quantize_model_(tiny_model, "fp8")
    assert all(type(m) is not Int8Linear for m in tiny_model.modules())  # failed requests changed nothing


def test_quantized_model_generates(tiny_model):
    quantize_model_(tiny_model, "int4")
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():
        out = tiny_model.generate(ids, max_new_tokens=6, min_new_tokens=6, do_sample=False, pad_token_id=2)
    assert out.shape == (1, 10)


@pytest.mark.parametrize("method", ["none", "int8", "int4", "fp8"])
def test_concat_linears_fuses_projections_exactly(method: str):
    """Engines fuse q/k/v and gate/up; fusing the quantized layers must equal running them apart."""
    torch.manual_seed(0)
    parts = [nn.Linear(128, n, bias=True) for n in (64, 32, 32)]
    if method == "int8":
        parts = [Int8Linear.from_linear(p) for p in parts]
    elif method == "int4":
        parts = [Int4Linear.from_linear(p, 64) for p in parts]
    elif method == "fp8":
        parts = [Fp8Linear.from_linear(p) for p in parts]
        for p in parts:
            p.backend = "reference"
    fused = Q.concat_linears(parts)
    assert fused.out_features == 128 and type(fused) is type(parts[0])
    x = torch.randn(3, 128)
    with torch.no_grad():
        assert torch.allclose(fused(x), torch.cat([p(x) for p in parts], -1), atol=1e-5)
    with pytest.raises(LmsmithError, match="one type"):
        Q.concat_linears([parts[0], nn.Linear(64, 8)])


def test_linear_weight_bytes_counts_quantized_storage_without_the_head():
    from lmsmith.tiny import tiny_model

    model = tiny_model("llama")
    head = model.get_output_embeddings().weight
    linears = [m for m in model.modules() if type(m) is nn.Linear and m is not model.get_output_embeddings()]
    fp32 = Q.linear_weight_bytes(model)
    assert fp32 == sum(m.weight.numel() * 4 for m in linears) and head.numel() > 0
    Q.quantize_model_(model, "int8")
    scales = sum(m.weight.shape[0] * 4 for m in linears)  # one fp32 scale per output channel
    assert Q.linear_weight_bytes(model) == sum(m.weight.numel() for m in linears) + scales  # a byte per weight


def test_int8_weight_at_an_unaligned_offset_runs_the_cpu_kernel():
    """safetensors can hand out a weight at an odd address; PyTorch's AVX-512 int8 kernel crashed (SIGSEGV) on
    it, so the module keeps an aligned copy for the kernel and the result is unchanged."""
    q = Int8Linear.from_linear(linear())
    buf = torch.empty(q.qweight.numel() + 64, dtype=torch.int8)
    off = next(i for i in range(1, 64) if (buf.data_ptr() + i) % 64)
    q.qweight = buf[off:off + q.qweight.numel()].view_as(q.qweight).copy_(q.qweight)
    assert q.qweight.data_ptr() % 64
    x = torch.randn(3, 256, dtype=torch.bfloat16)
    with torch.no_grad():
        fast = q.to(torch.bfloat16)(x)
        q.backend = "reference"
        ref = q(x)
    assert q.qweight.data_ptr() % 64 == 0
    assert rel_err(fast, ref) < 0.01


@pytest.mark.parametrize("make", [Int8Linear.from_linear, lambda l: Int4Linear.from_linear(l, 32)], ids=["int8", "int4"])
def test_bound_cpu_kernel_matches_forward_with_bias(make):
    """`cpu_kernel` (what the CPU decode step calls) computes what `forward` computes, bias included; a module
    forced to the reference backend offers none."""
    q = make(linear(bias=True))
    x = torch.randn(3, 256)
    fn = q.cpu_kernel(torch.float32)
    with torch.no_grad():
        torch.testing.assert_close(fn(x), q(x))
    assert fn(x).dtype == torch.float32
    q.backend = "reference"
    assert q.cpu_kernel(torch.float32) is None


@needs_triton
def test_triton_dequantize_in_the_interpreter():
    """The large-M path's one-launch dequantize (whole int4 groups per tile, partial tiles) against the layer's own."""
    out = run_check(Path(__file__).with_name("dequant_check.py"), timeout=600)
    assert sum(ln.startswith("int4 ") for ln in out.splitlines()) == 16
