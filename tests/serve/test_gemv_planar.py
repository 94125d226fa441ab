"""The planar int4 / int8 layouts of the batch-1 GEMV (`lmsmith.quant.planar`) and its kernel.

The layout tests run everywhere (PyTorch only). The kernel runs in Triton's CPU interpreter in a subprocess
(TRITON_INTERPRET must be set before Triton is imported): skipped where Triton is not installed, as on the CPU
CI; tests/gpu/test_bs1_quant_gpu.py runs it compiled inside the engine's batch-1 step."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from lmsmith.quant import Int4Linear, Int8Linear
from lmsmith.quant.planar import (
    INT4_FIELDS,
    INT8_FIELDS,
    dequantize_int4_planar,
    dequantize_int8_planar,
    pack_int4_planar,
    pack_int8_planar,
    plane_width,
)
from triton_interpreter import needs_triton, run_check


def test_plane_width_tiles_the_row():
    assert plane_width(2048, 8, 128) == 128 and plane_width(8192, 8, 128) == 128
    assert plane_width(2048, 8, 32) == 32  # a plane stays inside one group
    assert plane_width(128, 8, 128) == 16 and plane_width(2048, 4) == 128
    assert plane_width(100, 8, 4) is None  # no 16-byte tiling


def test_fields_sit_high_in_the_mantissa_and_do_not_overlap():
    for fields, bits in ((INT4_FIELDS, 4), (INT8_FIELDS, 8)):
        used = 0
        for shift, pos in fields:
            assert 7 <= pos and pos + bits <= 23  # inside the mantissa of 1.0, >= 7 bits up (precision)
            src = pos - shift
            mask = (2**bits - 1) << src
            assert 0 <= src and src + bits <= 32 and not used & mask
            used |= mask
        assert used == 2**32 - 1


@pytest.mark.parametrize("group,symmetric", [(32, False), (64, True), (128, False)])
def test_int4_planar_layout_keeps_the_weight(group, symmetric):
    torch.manual_seed(0)
    m = Int4Linear.from_linear(nn.Linear(1024, 24, bias=False), group, symmetric=symmetric)
    lay = pack_int4_planar(m.qweight, m.scales, m.zeros, group)
    assert lay["q32"].dtype == torch.int32 and lay["q32"].shape == (24, 128)
    assert lay["ab"].dtype == torch.int64 and lay["ab"].shape == (24, 1024 // plane_width(1024, 8, group))
    ref = m.dequantize(torch.float32)
    assert (dequantize_int4_planar(lay) - ref).abs().max() < 1e-4 * ref.abs().max()


def test_int8_planar_layout_keeps_the_weight():
    torch.manual_seed(0)
    m = Int8Linear.from_linear(nn.Linear(512, 24, bias=False))
    lay = pack_int8_planar(m.qweight)
    assert lay["q32"].shape == (24, 128)
    assert torch.equal(dequantize_int8_planar(lay), m.qweight.float())
    assert pack_int8_planar(torch.zeros(4, 100, dtype=torch.int8)) is None


@needs_triton
def test_planar_gemv_kernel_in_the_interpreter():
    out = run_check(Path(__file__).with_name("planar_gemv_check.py"), "512", "96", timeout=600)
    lines = [ln for ln in out.splitlines() if ln.startswith("ok ")]
    assert len(lines) >= 56 and any("rope" in ln for ln in lines) and any("norm-P4" in ln for ln in lines)
    assert any("dense-fp16-k1000" in ln for ln in lines) and any("int8-stored-k1000" in ln for ln in lines)


@needs_triton
def test_bs1_step_on_planar_tiles_in_the_interpreter():
    """forward_bs1 with every projection on planar tiles == the model's own kernels (int4 + int8 head, int8), and
    the residual-stream plan (norm prologues, add epilogues, one-launch attention) on a 16-bit and an int8 model."""
    out = run_check(Path(__file__).with_name("planar_step_check.py"))
    lines = [ln for ln in out.splitlines() if ln.startswith("ok ")]
    assert len(lines) == 16 and sum("norm-in" in ln for ln in lines) == 4, out
