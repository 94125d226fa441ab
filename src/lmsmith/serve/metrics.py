"""Prometheus metrics of the server (text format at GET /metrics).

Latency histograms and request counters are observed by the server as requests finish; engine state
(running/waiting, KV-cache usage, prefix-cache counters) is read from the latest `engine.stats()`
snapshot at scrape time by a custom collector, so the engine never needs to know about Prometheus.
Each app gets its own registry, so several servers (or tests) in one process do not collide.

Besides our `lmsmith_*` names, the same observations are exported under vLLM's metric names
(`vllm:time_to_first_token_seconds`, `vllm:num_requests_running`, `vllm:request_success_total`, ...) with
`model_name` and `version` labels, so dashboards and alerts written for vLLM work unchanged and canary
versions can be compared side by side. Token counters per model and version feed cost accounting.
"""

from __future__ import annotations

import bisect
from typing import Any, Callable

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
            "lmsmith_engine_prefill_graph_buckets": ("token-count buckets with captured prefill graphs",
                                                     s.get("prefill_graph_buckets", 0)),
            "lmsmith_engine_prefill_graph_bytes": ("GPU memory held by the prefill graphs (static buffers + pool)",
                                                   s.get("prefill_graph_bytes", 0)),
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
            "lmsmith_engine_prefill_graph_steps": ("prefill/mixed steps replayed as piecewise CUDA graphs",
                                                   s.get("prefill_graph_steps", 0)),
        }
        for name, (doc, value) in counters.items():
            c = CounterMetricFamily(name, doc)
            c.add_metric([], float(value))
            yield c


_TOKEN_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768)
VLLM_LABELS = ["model_name", "version"]


class VllmEngineCollector:
    """vLLM-named engine gauges/counters, one series per (model_name, version) engine being served."""

    def __init__(self, sources: Callable[[], list[tuple[tuple[str, str], dict]]]):
        self.sources = sources

    def collect(self):
        fams = {
            "vllm:num_requests_running": (GaugeMetricFamily, "requests in the running batch", "running"),
            "vllm:num_requests_waiting": (GaugeMetricFamily, "requests waiting for admission", "waiting"),
            "vllm:kv_cache_usage_perc": (GaugeMetricFamily, "KV-cache usage (1 = full)", "kv_usage"),
            "vllm:gpu_cache_usage_perc": (GaugeMetricFamily, "KV-cache usage (1 = full; pre-V1 name)", "kv_usage"),
            "vllm:num_preemptions": (CounterMetricFamily, "sequences preempted for lack of KV memory", "preemptions"),
            "vllm:prefix_cache_queries": (CounterMetricFamily, "prefix-cache lookups", "prefix_cache_queries"),
            "vllm:prefix_cache_hits": (CounterMetricFamily, "prefix-cache hits", "prefix_cache_hits"),
        }
        sources = list(self.sources())
        for name, (kind, doc, key) in fams.items():
            fam = kind(name, doc, labels=VLLM_LABELS)
            for labels, stats in sources:
                fam.add_metric(list(labels), float((stats or {}).get(key, 0) or 0))
            yield fam


class ServerMetrics:
    def __init__(self, snapshot: Callable[[], dict], model_name: str = "model", version: str | None = None):
        self.registry = CollectorRegistry()
        self.labels = (model_name, version or "")
        self.snapshot = snapshot
        self.sources: Callable[[], list[tuple[tuple[str, str], dict]]] | None = None  # set by a router
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
        L = VLLM_LABELS
        self.v_ttft = Histogram("vllm:time_to_first_token_seconds", "time to first token", L,
                                buckets=_LATENCY_BUCKETS, registry=r)
        self.v_tpot = Histogram("vllm:time_per_output_token_seconds", "time per output token", L,
                                buckets=_TPOT_BUCKETS, registry=r)
        self.v_itl = Histogram("vllm:inter_token_latency_seconds", "inter-token latency", L,
                               buckets=_TPOT_BUCKETS, registry=r)
        self.v_e2e = Histogram("vllm:e2e_request_latency_seconds", "end-to-end request latency", L,
                               buckets=_LATENCY_BUCKETS, registry=r)
        self.v_queue = Histogram("vllm:request_queue_time_seconds", "time waiting for a batch slot", L,
                                 buckets=_LATENCY_BUCKETS, registry=r)
        self.v_prefill = Histogram("vllm:request_prefill_time_seconds", "prefill time", L,
                                   buckets=_LATENCY_BUCKETS, registry=r)
        self.v_decode = Histogram("vllm:request_decode_time_seconds", "decode time (first to last token)", L,
                                  buckets=_LATENCY_BUCKETS, registry=r)
        self.v_prompt_len = Histogram("vllm:request_prompt_tokens", "prompt tokens per request", L,
                                      buckets=_TOKEN_BUCKETS, registry=r)
        self.v_gen_len = Histogram("vllm:request_generation_tokens", "generated tokens per request", L,
                                   buckets=_TOKEN_BUCKETS, registry=r)
        self.v_prompt_tokens = Counter("vllm:prompt_tokens", "prompt tokens processed", L, registry=r)
        self.v_generation_tokens = Counter("vllm:generation_tokens", "tokens generated", L, registry=r)
        self.v_success = Counter("vllm:request_success", "finished requests by finish reason",
                                 L + ["finished_reason"], registry=r)
        r.register(VllmEngineCollector(lambda: self.sources() if self.sources else [(self.labels, self.snapshot())]))
        self.touch(self.labels)

    def touch(self, labels: tuple[str, str]) -> None:
        """Create the series of a (model_name, version) at zero, so rate() and dashboards see it from the start."""
        for m in (self.v_ttft, self.v_tpot, self.v_itl, self.v_e2e, self.v_queue, self.v_prefill, self.v_decode,
                  self.v_prompt_len, self.v_gen_len, self.v_prompt_tokens, self.v_generation_tokens):
            m.labels(*labels)

    def bind(self, model_name: str, version: str | None) -> "BoundMetrics":
        """This registry, observing under another (model_name, version): one per canary version."""
        self.touch((model_name, version or ""))
        return BoundMetrics(self, (model_name, version or ""))

    def observe_request(self, ttft: float | None, tpot: float | None, e2e: float, prompt_tokens: int,
                        generation_tokens: int, finish_reasons: list[str], labels: tuple[str, str] | None = None) -> None:
        labels = labels or self.labels
        if ttft is not None:
            self.ttft.observe(ttft)
            self.v_ttft.labels(*labels).observe(ttft)
            self.v_decode.labels(*labels).observe(max(0.0, e2e - ttft))
        if tpot is not None:
            self.tpot.observe(tpot)
            self.v_tpot.labels(*labels).observe(tpot)
            # one observation per gap, as vLLM counts them (sum/count = mean ITL)
            observe_many(self.v_itl.labels(*labels), tpot, max(1, generation_tokens - len(finish_reasons)))
        self.e2e.observe(e2e)
        self.v_e2e.labels(*labels).observe(e2e)
        self.prompt_tokens.inc(prompt_tokens)
        self.generation_tokens.inc(generation_tokens)
        self.v_prompt_tokens.labels(*labels).inc(prompt_tokens)
        self.v_generation_tokens.labels(*labels).inc(generation_tokens)
        self.v_prompt_len.labels(*labels).observe(prompt_tokens)
        self.v_gen_len.labels(*labels).observe(generation_tokens)
        for reason in finish_reasons:
            self.finished.labels(reason or "unknown").inc()
            self.v_success.labels(*labels, reason or "abort").inc()

    def observe_ttft_phases(self, phases: dict[str, float], labels: tuple[str, str] | None = None) -> None:
        labels = labels or self.labels
        for phase, seconds in phases.items():
            self.ttft_phase.labels(phase).observe(max(0.0, seconds))
        if "queue" in phases:
            self.v_queue.labels(*labels).observe(max(0.0, phases["queue"]))
        if "prefill" in phases:
            self.v_prefill.labels(*labels).observe(max(0.0, phases["prefill"]))

    def render(self) -> bytes:
        return generate_latest(self.registry)


def observe_many(hist: Any, value: float, n: int) -> None:
    """What `n` calls of `hist.observe(value)` leave (the sum, and one bucket's count: buckets are made cumulative
    only when exposed), in O(1). prometheus_client has no count argument, and a loop cost 166 us for a 256-token
    request, run for a whole burst of finishing streams on the event loop that admits the next burst. Falls back to
    the loop where the client library's histogram internals differ."""
    try:
        bounds, buckets, total = hist._upper_bounds, hist._buckets, hist._sum
    except AttributeError:
        for _ in range(n):
            hist.observe(value)
        return
    total.inc(value * n)
    buckets[bisect.bisect_left(bounds, value)].inc(n)


class BoundMetrics:
    """A view of ServerMetrics that observes under fixed (model_name, version) labels."""

    def __init__(self, parent: ServerMetrics, labels: tuple[str, str]):
        self.parent, self.labels = parent, labels

    def observe_request(self, *args, **kwargs) -> None:
        self.parent.observe_request(*args, labels=self.labels, **kwargs)

    def observe_ttft_phases(self, phases: dict[str, float]) -> None:
        self.parent.observe_ttft_phases(phases, labels=self.labels)

    def __getattr__(self, name: str):
        return getattr(self.parent, name)
