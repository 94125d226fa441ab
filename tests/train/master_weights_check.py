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

# One launch per group (LMSMITH_MASTER_ONE_LAUNCH=1): address tables instead of a launch per weight. The same
# updates as the per-weight launches, bitwise, over two groups of ragged sizes, before and after a state reload.
def make(seed):
    torch.manual_seed(seed)
    ps = [torch.nn.Parameter(torch.randn(*shape)) for shape in [(37, 50), (3 * mw.BLOCK + 5,), (mw.BLOCK,), (7,)]]
    return ps, mw.MasterAdamW([{"params": ps[:2], "weight_decay": 0.1}, {"params": ps[2:], "weight_decay": 0.0}],
                              lr=1e-2, betas=(0.9, 0.95))


def run(one_launch, steps=3, opt_state=None):
    mw.ONE_LAUNCH = one_launch
    ps, opt = make(0)
    if opt_state is not None:  # a step first, so the tables exist and must be dropped by the reload
        for p in ps:
            p.grad = torch.ones(p.shape, dtype=torch.bfloat16)
        opt.step()
        opt.load_state_dict(opt_state)
    for i in range(steps):
        torch.manual_seed(100 + i)
        for p in ps:
            p.grad = torch.randn(p.shape).to(torch.bfloat16)
        opt.grad_scale = torch.tensor(2.0) if i % 2 else None
        opt.step()
    return ps, opt


(pa, oa), (pb, ob) = run(True), run(False)
assert oa._tables and not ob._tables  # the tables path ran in the first, not in the second
for a, b in zip(pa, pb):
    assert torch.equal(a, b) and torch.equal(oa.state[a]["master"], ob.state[b]["master"])
    assert torch.equal(oa.state[a]["exp_avg_sq"], ob.state[b]["exp_avg_sq"]) and float(oa.state[a]["step"]) == 3
print("ok one-launch")
(pa, oa), (pb, ob) = run(True, 2, oa.state_dict()), run(False, 2, ob.state_dict())
for a, b in zip(pa, pb):
    assert torch.equal(oa.state[a]["master"], ob.state[b]["master"]) and float(oa.state[a]["step"]) == 5
print("ok one-launch-reloaded")
