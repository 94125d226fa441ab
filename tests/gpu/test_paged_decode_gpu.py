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
def test_paged_decode_matches_gathered_sdpa(dtype, heads, kv_heads, d, bs, window):
    g = torch.Generator(device="cuda").manual_seed(0)
    nblocks, b, max_blocks = 200, 7, 20
    kc = torch.randn(nblocks, bs, kv_heads, d, device="cuda", dtype=dtype, generator=g)
    vc = torch.randn(nblocks, bs, kv_heads, d, device="cuda", dtype=dtype, generator=g)
    q = torch.randn(b, heads, d, device="cuda", dtype=dtype, generator=g)
    tables = torch.randperm(nblocks, device="cuda", generator=g)[:b * max_blocks].view(b, max_blocks)
    lens = torch.tensor([1, 3, bs, bs + 1, 5 * bs - 1, 77, max_blocks * bs], device="cuda")
    out = torch.full_like(q, float("nan"))
    paged_decode(q, kc, vc, tables, lens, d ** -0.5, window, out=out)
    ref = reference(q, kc, vc, tables, lens, d ** -0.5, window)
    err = ((out.double() - ref).norm() / ref.norm()).item()
    assert not out.isnan().any()
    assert err < (1e-5 if dtype == torch.float32 else 1e-2), err
