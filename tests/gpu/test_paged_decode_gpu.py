"""The Triton paged decode kernel against SDPA over gathered blocks (fresh random inputs, poisoned output)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmsmith.serve.paged_decode import paged_decode


def reference(q, kc, vc, tables, lens, scale, window):
    outs = []
    for i in range(q.shape[0]):
        n = int(lens[i])
        k = kc[tables[i]].flatten(0, 1)[:n].double()
        v = vc[tables[i]].flatten(0, 1)[:n].double()
        first = max(0, n - window) if window else 0
        k, v = k[first:], v[first:]
        o = F.scaled_dot_product_attention(q[i:i + 1, :, None].double(), k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                           scale=scale, enable_gqa=True)
        outs.append(o[0, :, 0])
    return torch.stack(outs)


@pytest.mark.parametrize("dtype,heads,kv_heads,d,bs,window", [
    (torch.float32, 4, 2, 16, 4, None), (torch.bfloat16, 32, 8, 64, 16, None), (torch.float32, 6, 2, 24, 16, None),
    (torch.bfloat16, 8, 8, 128, 16, 40), (torch.float32, 4, 1, 32, 8, 7)])
@pytest.mark.parametrize("splits", [1, 3, 16])
def test_paged_decode_matches_gathered_sdpa(dtype, heads, kv_heads, d, bs, window, splits):
    g = torch.Generator(device="cuda").manual_seed(0)
    nblocks, b, max_blocks = 200, 7, 20
    kc = torch.randn(nblocks, bs, kv_heads, d, device="cuda", dtype=dtype, generator=g)
    vc = torch.randn(nblocks, bs, kv_heads, d, device="cuda", dtype=dtype, generator=g)
    q = torch.randn(b, heads, d, device="cuda", dtype=dtype, generator=g)
    tables = torch.randperm(nblocks, device="cuda", generator=g)[:b * max_blocks].view(b, max_blocks)
    lens = torch.tensor([1, 3, bs, bs + 1, 5 * bs - 1, 77, max_blocks * bs], device="cuda")
    out = torch.full_like(q, float("nan"))
    paged_decode(q, kc, vc, tables, lens, d ** -0.5, window, out=out, splits=splits)
    ref = reference(q, kc, vc, tables, lens, d ** -0.5, window)
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert not out.isnan().any()
    assert err < (1e-5 if dtype == torch.float32 else 1e-2), err


def test_fused_kernels_match_eager():
    from lmsmith.serve import fused
    from lmsmith.serve.llama import rotate_half

    torch.manual_seed(0)
    dt, t, n = torch.bfloat16, 37, 2048
    x, r = (torch.randn(t, n, device="cuda", dtype=dt) for _ in range(2))
    w = torch.rand(n, device="cuda", dtype=dt)
    out, res = fused.add_rmsnorm(x, r, w, 1e-5)
    s = x + r
    h = s.float()
    ref = w * (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt)
    assert torch.equal(res, s)
    assert ((out.float() - ref.float()).norm() / ref.float().norm()) < 1e-2
    gu = torch.randn(t, 2 * 300, device="cuda", dtype=dt)
    ref = F.silu(gu[:, :300].float()) * gu[:, 300:].float()
    assert ((fused.silu_mul(gu).float() - ref).norm() / ref.norm()) < 1e-2
    heads, kvh, d, bs = 8, 2, 64, 16
    qkv = torch.randn(t, (heads + 2 * kvh) * d, device="cuda", dtype=dt)
    ang = torch.rand(100, d // 2, device="cuda") * 6
    cos, sin = torch.cat([ang.cos()] * 2, -1).to(dt), torch.cat([ang.sin()] * 2, -1).to(dt)
    pos = torch.randint(0, 100, (t,), device="cuda")
    slots = torch.randperm(10 * bs, device="cuda")[:t]
    kc = torch.zeros(10, bs, kvh, d, device="cuda", dtype=dt)
    vc = torch.zeros_like(kc)
    q, k, v = fused.rope_and_cache(qkv, cos, sin, pos, slots, kc, vc, heads, kvh, d)
    qr, kr, vr = qkv.float().split([heads * d, kvh * d, kvh * d], -1)
    c, s_ = cos[pos].float()[:, None], sin[pos].float()[:, None]
    qr, kr = (z.view(t, -1, d) for z in (qr, kr))
    qr, kr = qr * c + rotate_half(qr) * s_, kr * c + rotate_half(kr) * s_
    assert ((q.float() - qr).norm() / qr.norm()) < 1e-2 and ((k.float() - kr).norm() / kr.norm()) < 1e-2
    assert torch.equal(kc.view(-1, kvh, d)[slots], k) and torch.equal(vc.view(-1, kvh, d)[slots], vr.view(t, kvh, d).to(dt))


def test_argmax_rows_matches_torch_first_index():
    from lmsmith.serve.fused import argmax_rows

    g = torch.Generator(device="cuda").manual_seed(0)
    for b, v in [(1, 128256), (5, 49152), (3, 1000), (2, 4096 * 3 + 1)]:
        x = torch.randn(b, v, device="cuda", generator=g)
        x[0, v // 2] = x[0, v - 1] = 100.0  # ties: the first index wins, as torch.argmax
        assert torch.equal(argmax_rows(x), x.argmax(-1))
