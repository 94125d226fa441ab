"""Run by test_decode_attention.py in a subprocess with TRITON_INTERPRET=1 (Triton's CPU interpreter): the one-launch
decode attention (RoPE + K/V write + split attention + ticket merge) against the three-launch path and a float64
reference, with several split counts, GQA groups, head sizes, a sliding window and padded rows.
Prints one line per case, "ok <case> <relative error>" or raises."""

from __future__ import annotations

import os

assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from lmsmith.serve import fused  # noqa: E402
from lmsmith.serve.paged_decode import decode_attention, paged_decode  # noqa: E402


def rope_tables(n: int, d: int):
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2).float() / d))
    f = torch.outer(torch.arange(n).float(), inv)
    emb = torch.cat([f, f], -1)
    return emb.cos(), emb.sin()


def reference(qkv, cos, sin, pos, kc, vc, tables, lens, h, kv, d, scale, window):
    """float64: rotate q and the new k, put k/v at the new position, attend to every visible key."""
    outs = []
    for i in range(qkv.shape[0]):
        x = qkv[i].double()
        q, k, v = x[:h * d].view(h, d), x[h * d:(h + kv) * d].view(kv, d), x[(h + kv) * d:].view(kv, d)
        c, s = cos[pos[i]].double(), sin[pos[i]].double()

        def rot(t):
            return t * c + torch.cat([-t[..., d // 2:], t[..., :d // 2]], -1) * s
        q, k = rot(q), rot(k)
        n = int(lens[i])
        keys = kc[tables[i]].flatten(0, 1)[:n].double().clone()
        vals = vc[tables[i]].flatten(0, 1)[:n].double().clone()
        keys[n - 1], vals[n - 1] = k, v
        first = max(0, n - window) if window else 0
        keys, vals = keys[first:], vals[first:]
        o = F.scaled_dot_product_attention(q[None, :, None], keys.transpose(0, 1)[None], vals.transpose(0, 1)[None],
                                           scale=scale, enable_gqa=True)
        outs.append(o[0, :, 0])
    return torch.stack(outs)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


def case(name, dtype, h, kv, d, bs, window, splits, lens):
    torch.manual_seed(0)
    b, nblocks, maxb = len(lens), 64, 8
    kc = torch.randn(nblocks, bs, kv, d, dtype=dtype)
    vc = torch.randn(nblocks, bs, kv, d, dtype=dtype)
    tables = torch.randperm(nblocks)[:b * maxb].view(b, maxb)
    lens_t = torch.tensor(lens)
    pos = lens_t - 1
    slots = tables.gather(1, (pos // bs)[:, None])[:, 0] * bs + pos % bs
    qkv = torch.randn(b, (h + 2 * kv) * d, dtype=dtype)
    cos, sin = (t.to(dtype) for t in rope_tables(256, d))
    scale = d ** -0.5
    ref = reference(qkv, cos, sin, pos, kc, vc, tables, lens_t, h, kv, d, scale, window)
    kc2, vc2 = kc.clone(), vc.clone()
    got = decode_attention(qkv, cos, sin, pos, slots, kc2, vc2, tables, lens_t, h, kv, d, scale, window, splits=splits)
    err = rel(got, ref)
    tol = 1e-5 if dtype == torch.float32 else 2e-3
    assert err < tol, f"{name}: relative error {err:.3g} vs float64"
    # the cache now holds the rotated k and the v of every row's new token as the separate kernel writes them
    kc3, vc3 = kc.clone(), vc.clone()
    q3, _, _ = fused.rope_and_cache(qkv, cos, sin, pos, slots, kc3, vc3, h, kv, d) if dtype != torch.float32 else \
        (None, None, None)
    if q3 is not None:
        assert torch.equal(vc2, vc3), f"{name}: v cache differs from rope_and_cache's"
        assert rel(kc2, kc3) < 1e-3, f"{name}: k cache differs from rope_and_cache's"
        sep = paged_decode(q3, kc3, vc3, tables, lens_t, scale, window, splits=splits)
        assert rel(got, sep) < tol, f"{name}: differs from the three-launch path"
    # the tickets are left at zero for the next launch
    from lmsmith.serve.paged_decode import _TICKETS
    assert all(int(t.abs().sum()) == 0 for t in _TICKETS.values()), f"{name}: tickets not reset"
    print(f"ok {name} {err:.2e}", flush=True)


# (the interpreter holds bfloat16 as raw integers in element-wise ops: the 16-bit cases run in float16)
case("fp32-gqa2-splits3", torch.float32, 4, 2, 16, 4, None, 3, [1, 3, 4, 5, 19, 32])
case("fp16-gqa4-splits16", torch.float16, 32, 8, 64, 16, None, 16, [1, 17, 100, 128])
case("fp16-splits1", torch.float16, 8, 2, 64, 16, None, 1, [2, 70, 127])
case("fp32-window", torch.float32, 4, 1, 32, 8, 7, 4, [1, 6, 7, 8, 40])
case("fp16-d96-window", torch.float16, 6, 2, 96, 16, 40, 5, [3, 41, 90])
case("fp32-padded-rows", torch.float32, 4, 2, 16, 4, None, 2, [1, 1, 9])
