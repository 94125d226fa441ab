"""Prometheus metrics of the server (text format at GET /metrics).

Latency histograms and request counters are observed by the server as requests finish; engine state
(running/waiting, KV-cache usage, prefix-cache counters) is read from the latest `engine.stats()`
snapshot at scrape time by a custom collector, so the engine never needs to know about Prometheus.
Each app gets its own registry, so several servers (or tests) in one process do not collide.
"""

from __future__ import annotations

from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_TPOT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5)


class EngineStatsCollector:
    """Gauges and counters from a stats snapshot (the keys of `Engine.stats()`)."""

    def __init__(self, snapshot: Callable[[], dict]):
        self.snapshot = snapshot

    def collect(self):
        s = self.snapshot() or {}
        gauges = {
            "lmsmith_requests_running": ("requests in the running batch", s.get("running", 0)),
            "lmsmith_requests_waiting": ("requests waiting for admission", s.get("waiting", 0)),
            "lmsmith_kv_cache_usage_ratio": ("fraction of KV-cache blocks in use", s.get("kv_usage", 0.0)),
            "lmsmith_kv_cache_blocks_total": ("KV-cache blocks", s.get("kv_blocks_total", 0)),
            "lmsmith_kv_cache_blocks_used": ("KV-cache blocks in use", s.get("kv_blocks_used", 0)),
        }
        queries, hits = s.get("prefix_cache_queries", 0), s.get("prefix_cache_hits", 0)
        gauges["lmsmith_prefix_cache_hit_rate"] = ("prefix-cache hits / queries since start",
                                                   hits / queries if queries else 0.0)
        for name, (doc, value) in gauges.items():
            g = GaugeMetricFamily(name, doc)
            g.add_metric([], float(value))
            yield g
        counters = {
            "lmsmith_prefix_cache_queries": ("prefix-cache lookups (blocks)", queries),
            "lmsmith_prefix_cache_hits": ("prefix-cache hits (blocks)", hits),
            "lmsmith_preemptions": ("sequences preempted for lack of KV memory", s.get("preemptions", 0)),
            "lmsmith_engine_steps": ("engine steps (one batched forward each)", s.get("engine_steps", 0)),
            "lmsmith_engine_step_seconds": ("wall time spent inside engine steps", s.get("engine_step_seconds", 0.0)),
        }
        for name, (doc, value) in counters.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(value))
            yield c


class ServerMetrics:
    def __init__(self, snapshot: Callable[[], dict]):
        self.registry = CollectorRegistry()
        r = self.registry
        self.ttft = Histogram("lmsmith_time_to_first_token_seconds", "time to first token", buckets=_LATENCY_BUCKETS,
                              registry=r)
        self.tpot = Histogram("lmsmith_time_per_output_token_seconds", "time per output token after the first",
                              buckets=_TPOT_BUCKETS, registry=r)
        self.e2e = Histogram("lmsmith_e2e_request_latency_seconds", "end-to-end request latency",
                             buckets=_LATENCY_BUCKETS, registry=r)
        # where the time to first token goes: HTTP handler -> engine (admit), waiting for a batch slot
        # (queue), the prefill step(s) (prefill), engine thread -> event loop -> response (deliver)
        self.ttft_phase = Histogram("lmsmith_ttft_phase_seconds", "time to first token by phase", ["phase"],
                                    buckets=_LATENCY_BUCKETS, registry=r)
        self.requests = Counter("lmsmith_requests", "HTTP requests by endpoint and status code",
                                ["endpoint", "status"], registry=r)
        self.finished = Counter("lmsmith_request_finish", "finished sequences by finish reason",
                                ["finish_reason"], registry=r)
        self.prompt_tokens = Counter("lmsmith_prompt_tokens", "prompt tokens processed", registry=r)
        self.generation_tokens = Counter("lmsmith_generation_tokens", "tokens generated", registry=r)
        r.register(EngineStatsCollector(snapshot))

    def observe_request(self, ttft: float | None, tpot: float | None, e2e: float, prompt_tokens: int,
                        generation_tokens: int, finish_reasons: list[str]) -> None:
        if ttft is not None:
            self.ttft.observe(ttft)
        if tpot is not None:
            self.tpot.observe(tpot)
        self.e2e.observe(e2e)
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(generation_tokens)
        for reason in finish_reasons:
            self.finished.labels(reason or "unknown").inc()

    def observe_ttft_phases(self, phases: dict[str, float]) -> None:
        for phase, seconds in phases.items():
            self.ttft_phase.labels(phase).observe(max(0.0, seconds))

    def render(self) -> bytes:
        return generate_latest(self.registry)
