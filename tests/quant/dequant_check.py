"""Run under TRITON_INTERPRET=1 (tests/quant/test_quantize.py does): the one-launch Triton dequantize of the large-M
CUDA path gives the weight the layer's own dequantize gives, for int4 at every group size (whole groups per tile,
partial tiles at the row's end, rows past a tile) and for int8."""

from __future__ import annotations

import sys

import torch

from lmsmith.quant import kernels
from lmsmith.quant.layers import Int4Linear, Int8Linear, int4_zero_points


def main() -> int:
    torch.manual_seed(0)
    for k, n in ((320, 48), (512, 32), (1024, 16)):  # N: a multiple of 16 (the CPU tinygemm layout)
        lin = torch.nn.Linear(k, n, bias=False)
        for group in (32, 64, 128):
            if k % group:
                continue
            for symmetric in (False, True):
                q4 = Int4Linear.from_linear(lin, group_size=group, symmetric=symmetric)
                s = q4.scales.float()  # the float32 s and m of the layer's CUDA layouts: w = q * s + m
                m = -int4_zero_points(s, q4.zeros) * s
                got = kernels.dequantize(q4.qweight, s.contiguous(), m.contiguous(), k, torch.float16, "int4", group)
                want = q4.dequantize(torch.float32).half()
                err = (got.float() - want.float()).abs().max().item()
                print(f"int4 k={k} n={n} g={group} sym={symmetric}: max abs error {err:.3g}")
                if got.shape != want.shape or err > 1e-3:
                    return 1
        q8 = Int8Linear.from_linear(lin)
        got = q8.fast_dequantize(torch.zeros(2, k).half())
        err = (got.float() - q8.dequantize(torch.float32).half().float()).abs().max().item()
        print(f"int8 k={k} n={n}: max abs error {err:.3g}")
        if err > 1e-3:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
