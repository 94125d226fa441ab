"""`metrics.observe_many` leaves a histogram exactly as n calls of `observe` would: every bucket, the count, the sum."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from lmsmith.serve.metrics import observe_many

BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.25, 1.0)


def exposition(observe) -> dict[str, float]:
    reg = CollectorRegistry()
    h = Histogram("itl_seconds", "test", ["model"], registry=reg, buckets=BUCKETS)
    observe(h.labels("m"))
    out = {}
    for line in generate_latest(reg).decode().splitlines():
        if line.startswith("itl_seconds_") and "_created" not in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


# values on a bucket bound, between bounds, past the last bound (+Inf), and one not exact in binary
@pytest.mark.parametrize("value", [0.0025, 0.003, 0.5, 2.0, 0.0016])
@pytest.mark.parametrize("n", [1, 7, 255])
def test_many_observations_in_one_call_equal_a_loop(value, n):
    def loop(h):
        for _ in range(n):
            h.observe(value)

    want = exposition(loop)
    got = exposition(lambda h: observe_many(h, value, n))
    assert got.keys() == want.keys()
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-12), k
    assert got['itl_seconds_count{model="m"}'] == n


def test_a_histogram_without_those_internals_gets_the_loop():
    seen = []

    class Plain:
        def observe(self, v):
            seen.append(v)

    observe_many(Plain(), 0.5, 3)
    assert seen == [0.5, 0.5, 0.5]
