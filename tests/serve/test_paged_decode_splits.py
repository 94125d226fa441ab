"""The decode kernels' split count: a power of two (each distinct count is a Triton compile), from the set that
`warm_up` compiles at start, never more than the GPU needs; LMSMITH_DECODE_SPLITS=exact keeps the old counts."""

from __future__ import annotations

import pytest

from lmsmith.serve.paged_decode import MAX_SPLITS, NUM_SMS_HINT, num_splits, split_variants, warm_up


@pytest.mark.parametrize("kv_heads", [1, 2, 4, 8, 16, 32])
def test_split_counts_come_from_the_warmed_set(kv_heads, monkeypatch):
    monkeypatch.delenv("LMSMITH_DECODE_SPLITS", raising=False)
    seen = []
    for b in range(1, 300):
        s = num_splits(b, kv_heads)
        assert s in split_variants() and s & (s - 1) == 0 and 1 <= s <= MAX_SPLITS
        if b * kv_heads >= NUM_SMS_HINT:
            assert s == 1  # the batch alone fills the GPU
        else:  # at least as many programs as before (about two per SM), at most twice as many
            exact = min(MAX_SPLITS, -(-2 * NUM_SMS_HINT // (b * kv_heads)))
            assert exact <= s < 2 * exact
        seen.append(s)
    assert seen == sorted(seen, reverse=True)  # more rows, fewer splits


def test_exact_counts_on_request(monkeypatch):
    monkeypatch.setenv("LMSMITH_DECODE_SPLITS", "exact")
    assert [num_splits(b, 8) for b in (1, 3, 5, 6, 9, 16, 17)] == [16, 11, 7, 6, 4, 3, 1]


def test_warm_up_is_a_no_op_off_cuda():
    import torch

    kc = torch.zeros(4, 16, 8, 64)
    assert warm_up(kc, kc, 32) == 0
