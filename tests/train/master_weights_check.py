"""Run by test_master_weights.py in a subprocess with TRITON_INTERPRET=1: the Triton AdamW kernel (bf16 gradient in,
fp32 master and moments, bf16 weight out) against the same update in float64; with and without the folded clip.
(float64, not torch's fp32 ops: on the 2-core CI machine torch's multithreaded CPU sqrt was seen off by 3e-4.)"""

import math
import os

import torch

import lmsmith.train.master_weights as mw

assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"
assert mw.triton is not None

torch.manual_seed(0)
n = 3 * mw.BLOCK + 77  # a ragged last block
lr, b1, b2, eps, wd, step = 1e-2, 0.9, 0.95, 1e-8, 0.1, 3
for scale in (None, torch.tensor(3.5)) * 3:  # repeated calls: an aliased argument once corrupted the second one
    master = torch.randn(n)
    w = master.to(torch.bfloat16)
    m, v = torch.randn(n) * 0.1, torch.rand(n) * 0.01
    g = torch.randn(n).to(torch.bfloat16)
    gd = g.double() / (float(scale) if scale is not None else 1.0)
    md = b1 * m.double() + (1 - b1) * gd
    vd = b2 * v.double() + (1 - b2) * gd * gd
    pd = master.double() * (1 - lr * wd) - lr / (1 - b1 ** step) * md / (vd.sqrt() / math.sqrt(1 - b2 ** step) + eps)
    mw.update(w, g, master, m, v, scale, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
              bc1=1 - b1 ** step, bc2=1 - b2 ** step)
    torch.testing.assert_close(master.double(), pd, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(m.double(), md, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(v.double(), vd, rtol=1e-6, atol=1e-9)
    # the bf16 weight is the master rounded (the interpreter truncates where the GPU rounds to nearest even)
    assert torch.all((w.float() - master).abs() <= master.abs() * 2 ** -7)
    print("ok", "scale" if scale is not None else "plain")
