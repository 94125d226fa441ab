"""`paged_decode.warm_up`: after it, eager decode attention for any number of decode rows compiles no Triton kernel
(a compile in the middle of serving stalled every request in flight), and still matches the reference."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from lmsmith.serve.paged_decode import paged_decode


def reference(q, kc, vc, tables, lens, scale):
    outs = []
    for i in range(q.shape[0]):
        n = int(lens[i])
        k = kc[tables[i]].flatten(0, 1)[:n].double()
        v = vc[tables[i]].flatten(0, 1)[:n].double()
        o = F.scaled_dot_product_attention(q[i:i + 1, :, None].double(), k.transpose(0, 1)[None], v.transpose(0, 1)[None],
                                           scale=scale, enable_gqa=True)
        outs.append(o[0, :, 0])
    return torch.stack(outs)


def _compiled(fn) -> int:
    caches = getattr(fn, "device_caches", None)
    if caches is not None:  # Triton >= 3.2: device -> (kernels, target, backend, binder)
        return sum(len(v[0]) for v in caches.values())
    caches = getattr(fn, "cache", None)
    if caches is not None:  # older Triton: device -> kernels
        return sum(len(v) for v in caches.values())
    pytest.skip("this Triton keeps its compiled kernels elsewhere")


def test_warm_up_compiles_every_variant_an_eager_step_meets():
    """After warm_up, eager decode attention for any number of decode rows compiles nothing more (a compile in the
    middle of serving stalled every request in flight), and its output still matches the reference."""
    import lmsmith.serve.paged_decode as pd

    g = torch.Generator(device="cuda").manual_seed(1)
    heads, kv_heads, d, bs, nblocks = 32, 8, 64, 16, 64
    kc = torch.randn(nblocks, bs, kv_heads, d, device="cuda", dtype=torch.bfloat16, generator=g)
    vc = torch.randn(nblocks, bs, kv_heads, d, device="cuda", dtype=torch.bfloat16, generator=g)
    assert pd.warm_up(kc, vc, heads) == len(pd.split_variants())
    kernels = (pd._paged_decode_kernel, pd._paged_decode_split_kernel, pd._merge_splits_kernel)
    before = [_compiled(k) for k in kernels]
    for b in range(1, 40):
        q = torch.randn(b, heads, d, device="cuda", dtype=torch.bfloat16, generator=g)
        tables = torch.randint(0, nblocks, (b, 4), device="cuda", generator=g)  # fresh long tensors, as eager steps
        lens = torch.randint(1, 4 * bs + 1, (b,), device="cuda", generator=g)
        out = paged_decode(q, kc, vc, tables, lens, d ** -0.5)
        if b in (3, 5, 9, 17):
            ref = reference(q, kc, vc, tables, lens, d ** -0.5)
            assert ((out.double() - ref).norm() / ref.norm()).item() < 1e-2
    assert [_compiled(k) for k in kernels] == before
