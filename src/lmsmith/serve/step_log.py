"""A per-iteration trace of the engine loop, for finding where a burst's time to first token goes.

`LMSMITH_STEP_LOG=PATH` makes the engine loop (the thread of `AsyncEngine`, or the child's `EngineCore`) append
one JSON line per loop iteration that did something: when it started (wall clock, the handlers' clock), how long
it waited idle before, the adds/aborts it applied and how long each had waited since the handler submitted it,
what the step ran (prefill tokens and sequences, decode rows, overlapped launch, prefill-graph replay) and how
long it took, the queue lengths after it, and the outputs it handed on (first tokens, finished) and how long
that took. Unset, the loops check one attribute per iteration and the engine computes nothing extra.

    {"t": 1733475600.123, "idle_ms": 12.1, "adds": 2, "lag_ms": [1.9, 0.4], "add_ids": ["cmpl-..-0", ".."],
     "apply_ms": 0.3, "ack_ms": 0.1, "step_ms": 9.2, "pf_tok": 256, "pf_seqs": 2, "dec": 30, "ovl": 0, "graph": 1,
     "w": 0, "r": 32, "preempt": 0, "out": 32, "first": 2, "fin": 0, "first_ids": [..], "send_ms": 0.2,
     "pid": 41, "loop": "process"}

`bench/serve/analyze_step_log.py` turns a log into a burst timeline.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import gc
import json
import os
import threading
import time
from typing import Any, Iterator

ENV = "LMSMITH_STEP_LOG"
FLUSH_EVERY_S = 1.0


class GcWatch:
    """Time spent in the cyclic garbage collector (it holds the GIL: in the engine's process it stalls the loop, in
    the HTTP process the event loop). `take()` returns (seconds, highest generation) since the last call."""

    def __init__(self, on_pause: Any = None):
        self.start: float | None = None
        self.total, self.gen = 0.0, -1
        self.on_pause = on_pause  # called with (generation, seconds, collected) after each collection
        gc.callbacks.append(self.callback)

    def callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self.start = time.perf_counter()
        elif self.start is not None:
            d = time.perf_counter() - self.start
            self.start = None
            self.total += d
            self.gen = max(self.gen, info.get("generation", 0))
            if self.on_pause is not None:
                self.on_pause(info.get("generation", 0), d, info.get("collected", 0))

    def take(self) -> tuple[float, int]:
        out = (self.total, self.gen)
        self.total, self.gen = 0.0, -1
        return out

    def close(self) -> None:
        if self.callback in gc.callbacks:
            gc.callbacks.remove(self.callback)


class StepLog:
    """Buffered JSON lines; flushed when the loop goes idle, at least every second, and at exit."""

    def __init__(self, path: str, loop: str):
        self.path, self.loop, self.pid = path, loop, os.getpid()
        d = os.path.dirname(path)
        if d:
            os.makedirs(d, exist_ok=True)
        self.f = open(path, "a", buffering=1 << 16)
        self.lines = 0
        self.flushed = time.monotonic()
        self.lock = threading.Lock()
        self.gc = GcWatch()
        atexit.register(self.close)
        self.write({"t": time.time(), "event": "start", "gc_frozen": gc.get_freeze_count()})

    @classmethod
    def from_env(cls, loop: str) -> "StepLog | None":
        path = os.environ.get(ENV)
        return cls(path, loop) if path else None

    def write(self, rec: dict) -> None:
        rec["pid"], rec["loop"] = self.pid, self.loop
        with self.lock:
            if self.f.closed:
                return
            self.f.write(json.dumps(rec, separators=(",", ":")) + "\n")
            self.lines += 1
            if time.monotonic() - self.flushed > FLUSH_EVERY_S:
                self.flush()

    def flush(self) -> None:
        if not self.f.closed:
            self.f.flush()
        self.flushed = time.monotonic()

    def close(self) -> None:
        self.gc.close()
        with self.lock:
            if not self.f.closed:
                self.f.close()


def trace_steps(engine: Any) -> None:
    """Ask the engine to keep `step_info` for each step (an engine that cannot is logged without it)."""
    try:
        engine.trace_steps = True
    except (AttributeError, TypeError):
        pass


@contextlib.contextmanager
def step_log_for(loop: str, engine: Any) -> Iterator[StepLog | None]:
    """The engine loop's step log while it runs (None when LMSMITH_STEP_LOG is unset), closed when it stops."""
    slog = StepLog.from_env(loop)
    if slog is not None:
        trace_steps(engine)
    try:
        yield slog
    finally:
        if slog is not None:
            slog.close()


def ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def step_fields(engine: Any, graph_steps_before: int) -> dict:
    """What the engine's last step ran (its `step_info`, when it keeps one) and the queues after it."""
    rec: dict = {}
    info = getattr(engine, "step_info", None)
    if info is not None:
        rec["pf_tok"], rec["pf_seqs"], rec["dec"], rec["ovl"] = info
        engine.step_info = None
    g = graph_steps(engine)
    if g:
        rec["graph"] = g - graph_steps_before
    sched = getattr(engine, "scheduler", None)
    waiting, running = getattr(sched, "waiting", None), getattr(sched, "running", None)
    if waiting is None:  # an engine without our scheduler (e.g. a benchmark's stand-in)
        waiting, running = getattr(engine, "waiting", ()), getattr(engine, "running", ())
    rec["w"], rec["r"] = len(waiting), len(running)
    pre = getattr(sched, "num_preemptions", None)
    if pre is not None:
        rec["preempt"] = pre
    return rec


def graph_steps(engine: Any) -> int:
    """Prefill/mixed steps replayed as piecewise CUDA graphs so far (0 without them)."""
    pg = getattr(getattr(engine, "runner", None), "prefill_graphs", None)
    return int(getattr(pg, "steps", 0) or 0)


def output_fields(outputs: list) -> dict:
    """How many outputs, how many carry a sample's first token, how many finish a sample."""
    first = fin = 0
    for o in outputs:
        new = o.new_token_ids
        first += bool(new) and len(o.token_ids) == len(new)
        fin += bool(o.finished)
    return {"out": len(outputs), "first": first, "fin": fin}


def loop_record(t0: float, idle: float, adds: list[tuple[str, float]], aborts: int, apply_s: float, step_s: float,
                engine: Any, graph_steps_before: int, outputs: list, send_s: float, **extra: float) -> dict:
    """One loop iteration that stepped: `t0` (perf_counter) when it began, `idle` seconds waited before it, the adds
    it applied as (request id, wall time the handler submitted it), the step and the outputs it handed on."""
    now = time.perf_counter()
    wall = time.time() - (now - t0)
    rec: dict = {"t": round(wall, 6), "idle_ms": ms(idle)}
    if adds:  # lag: submitted -> applied (the end of this iteration's applying)
        applied = wall + apply_s
        rec |= {"adds": len(adds), "lag_ms": [ms(applied - t) for _, t in adds], "add_ids": [r for r, _ in adds]}
    if aborts:
        rec["aborts"] = aborts
    rec["apply_ms"] = ms(apply_s)
    rec |= {f"{k}_ms": ms(v) for k, v in extra.items()}
    rec["step_ms"] = ms(step_s)
    rec |= step_fields(engine, graph_steps_before)
    rec |= output_fields(outputs)
    if rec["first"]:
        rec["first_ids"] = [o.request_id for o in outputs
                            if o.new_token_ids and len(o.token_ids) == len(o.new_token_ids)]
    rec["send_ms"] = ms(send_s)
    return rec


def with_gc(rec: dict, slog: StepLog) -> dict:
    """Add the garbage collector's time during this iteration (`gc_ms`, `gc_gen`), when it ran."""
    spent, gen = slog.gc.take()
    if gen >= 0:
        rec["gc_ms"], rec["gc_gen"] = ms(spent), gen
    return rec


class HttpMonitor:
    """In the HTTP process (LMSMITH_STEP_LOG=PATH -> PATH.http.jsonl): how late the event loop wakes up (a 5 ms
    sleep that overshoots by more than `LAG_MS` is written as {"event": "lag", "ms": overshoot}), and every garbage
    collection over 1 ms ({"event": "gc", "gen", "ms", "collected"}). A late loop delays parsing and admitting new
    requests and streaming first tokens; in the thread placement it is also the engine thread holding the GIL."""

    TICK_S = 0.005
    LAG_MS = 2.0

    def __init__(self, path: str):
        self.log = StepLog(path, "http")
        self.log.gc.on_pause = self.on_gc
        self.task: asyncio.Task | None = None

    @classmethod
    def from_env(cls) -> "HttpMonitor | None":
        path = os.environ.get(ENV)
        return cls(f"{path}.http.jsonl") if path else None

    def on_gc(self, gen: int, seconds: float, collected: int) -> None:
        if seconds >= 0.001:
            self.log.write({"t": round(time.time(), 6), "event": "gc", "gen": gen, "ms": ms(seconds),
                            "collected": collected})

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self.log.write({"t": round(time.time(), 6), "event": "loop", "impl": type(loop).__module__})  # uvloop or asyncio
        self.task = loop.create_task(self.watch())

    async def watch(self) -> None:
        while True:
            t = time.perf_counter()
            await asyncio.sleep(self.TICK_S)
            late = (time.perf_counter() - t - self.TICK_S) * 1000
            if late > self.LAG_MS:
                self.log.write({"t": round(time.time(), 6), "event": "lag", "ms": round(late, 3)})

    def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
        self.log.close()
