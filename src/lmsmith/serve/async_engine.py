"""The engine's step loop in a background thread, fed and drained from asyncio.

The engine is synchronous and not thread-safe, so exactly one thread touches it: this loop applies
queued adds/aborts, runs `engine.step()`, and hands each step's outputs to the event loop, which routes
them to per-request asyncio queues. Around that sits the server's flow control: a bounded number of
requests in flight (429 beyond it), a per-request timeout, cancellation (a client that goes away aborts
its request, freeing its KV blocks), and draining (stop admitting, let in-flight requests finish).
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

from lmsmith.serve.process_tuning import (
    freeze_gc_heap,
    restore_switch_interval,
    shorten_switch_interval,
    unfreeze_gc_heap,
)
from lmsmith.serve.step_log import HttpMonitor, StepLog, graph_steps, loop_record, step_log_for, with_gc

log = logging.getLogger("lmsmith.serve")


class QueueFull(Exception):
    """More requests in flight than the server admits."""


class ShuttingDown(Exception):
    """The server is draining and admits no new requests."""


class RequestTimeout(Exception):
    """A request ran longer than the server's per-request timeout."""


class EngineFailed(Exception):
    """The engine raised while stepping; the request cannot complete."""


class Inbox:
    """One request's outputs in arrival order. `put_nowait` (on the event loop) costs an append and at most one
    wake-up; the consumer takes everything queued at once (`get_all`), so a stream that fell behind catches up in
    one step instead of one task switch, one SSE chunk and one socket write per token."""

    __slots__ = ("items", "waiter")

    def __init__(self) -> None:
        self.items: collections.deque = collections.deque()
        self.waiter: asyncio.Future | None = None

    def put_nowait(self, item: Any) -> None:
        self.items.append(item)
        w = self.waiter
        if w is not None and not w.done():
            w.set_result(None)

    def empty(self) -> bool:
        return not self.items

    def qsize(self) -> int:
        return len(self.items)

    async def get_all(self) -> list:
        while not self.items:
            self.waiter = asyncio.get_running_loop().create_future()
            try:
                await self.waiter
            finally:
                self.waiter = None
        items = list(self.items)
        self.items.clear()
        return items


@dataclass
class Tracked:
    queue: Inbox
    n: int
    finished: set[int] = field(default_factory=set)
    prompt: Any = None  # the prompt ids (a child-process engine sends no prompt back)
    acc: dict = field(default_factory=dict)  # sample index -> [token ids, text] so far (child-process engine)


class AsyncEngine:
    def __init__(self, engine: Any, max_num_seqs: int = 64, max_queue: int = 256,
                 request_timeout: float | None = 600.0):
        self.engine = engine
        self.capacity = max_num_seqs + max_queue  # running batch + waiting queue
        self.request_timeout = request_timeout
        self.stream_interval = 1  # tokens a stream gathers per output after its first (the server's --stream-interval)
        self.accepting = True
        self._requests: dict[str, Tracked] = {}
        self._commands: list[tuple] = []
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._monitor: HttpMonitor | None = None  # LMSMITH_STEP_LOG: the event loop's lag and GC pauses
        self._switched = False  # start() shortened the GIL switch interval (restored when the last engine stops)
        self.steps = 0  # engine steps run, and their wall time: TPOT minus step time is the server's overhead
        self.step_seconds = 0.0
        self._stats: dict = self._snapshot()
        self.error: str | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        freeze_gc_heap()  # the server is loaded: what lives now lives on
        self._monitor = HttpMonitor.from_env()
        if self._monitor is not None:
            self._monitor.start()
        if not self._switched:
            self._switched = shorten_switch_interval()
        self._thread = threading.Thread(target=self._run, name="lmsmith-engine", daemon=True)
        self._thread.start()

    async def drain(self, timeout: float = 30.0) -> None:
        """Stop admitting; wait (up to `timeout`) for in-flight requests; abort what is left."""
        self.accepting = False
        deadline = time.monotonic() + timeout
        while self._requests and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for rid in list(self._requests):
            self._abort(rid)

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        self._stop_monitor()
        unfreeze_gc_heap()  # this engine's objects may be garbage now; another engine's start() freezes again
        if self._switched:
            self._switched = False
            restore_switch_interval()

    def _stop_monitor(self) -> None:
        if self._monitor is not None:
            self._monitor.stop()
            self._monitor = None

    @property
    def alive(self) -> bool:
        """False once the engine can serve nothing more (its process died); /health answers 503."""
        return True

    @property
    def in_flight(self) -> int:
        return len(self._requests)

    def stats(self) -> dict:
        return self._stats

    # ------------------------------------------------------------------ requests
    async def add(self, request_id: str, prompt: list[int] | str, params: Any) -> "Handle":
        """Admit a request. Raises QueueFull or ShuttingDown, or the engine's own error (e.g. LmsmithError
        for an over-long prompt), before anything is generated, so the server can answer with a status."""
        if not self.accepting:
            raise ShuttingDown()
        if len(self._requests) >= self.capacity:
            raise QueueFull()
        tracked = Tracked(Inbox(), n=max(1, int(getattr(params, "n", 1) or 1)))
        self._requests[request_id] = tracked
        admitted: concurrent.futures.Future = concurrent.futures.Future()
        try:
            self._submit(("add", request_id, prompt, params, admitted, time.time()))
            await asyncio.wrap_future(admitted)
        except BaseException:
            self._abort(request_id)
            raise
        return Handle(self, request_id, tracked)

    async def generate(self, request_id: str, prompt: list[int] | str, params: Any) -> AsyncIterator[Any]:
        handle = await self.add(request_id, prompt, params)
        async for out in handle:
            yield out

    def _abort(self, request_id: str) -> None:
        self._requests.pop(request_id, None)
        self._submit(("abort", request_id))

    def _submit(self, command: tuple) -> None:
        with self._lock:
            self._commands.append(command)
        self._wake.set()

    # ------------------------------------------------------------------ the engine thread
    def _run(self) -> None:
        with step_log_for("thread", self.engine) as slog:
            self._loop_steps(slog)

    def _loop_steps(self, slog: StepLog | None) -> None:
        eng = self.engine
        idle = 0.0
        while not self._stop.is_set():
            t0 = time.perf_counter()
            with self._lock:
                commands, self._commands = self._commands, []
            for cmd in commands:
                self._apply(cmd)
            if not eng.has_unfinished():
                self._stats = self._snapshot()
                if slog is not None:
                    slog.flush()
                w = time.perf_counter()
                self._wake.wait(0.5)
                self._wake.clear()
                idle += time.perf_counter() - w
                continue
            t = time.perf_counter()
            g = graph_steps(eng) if slog is not None else 0
            try:
                outputs = eng.step()
            except Exception as e:  # an engine bug: fail the requests in flight, keep serving
                log.exception("engine step failed")
                self.error = f"{type(e).__name__}: {e}"
                self._fail_all(EngineFailed(self.error))
                continue
            t1 = time.perf_counter()
            self.step_seconds += t1 - t
            self.steps += 1
            self._stats = self._snapshot()
            if outputs:
                self._loop.call_soon_threadsafe(self._dispatch, outputs)
            if slog is not None:
                try:
                    adds = [(c[1], c[5]) for c in commands if c[0] == "add"]
                    rec = loop_record(t0, idle, adds, len(commands) - len(adds), t - t0, t1 - t, eng, g, outputs,
                                      time.perf_counter() - t1)
                    slog.write(with_gc(rec, slog))
                except Exception:  # a trace must never stop the serving
                    log.exception("the step log failed; it stops here")
                    slog = None
                idle = 0.0

    def _snapshot(self) -> dict:
        return _safe_stats(self.engine) | {"engine_steps": self.steps, "engine_step_seconds": self.step_seconds}

    def _apply(self, cmd: tuple) -> None:
        if cmd[0] == "abort":
            try:
                self.engine.abort(cmd[1])
            except Exception:  # already finished or unknown: nothing to free
                pass
            return
        rid, prompt, params, fut = cmd[1:5]
        if rid not in self._requests:  # cancelled before it reached the engine
            fut.cancel()
            return
        try:
            self.engine.add_request(rid, prompt, params)
        except BaseException as e:
            fut.set_exception(e)
        else:
            fut.set_result(None)

    def _fail_all(self, err: Exception) -> None:
        for rid in list(self._requests):
            try:
                self.engine.abort(rid)
            except Exception:
                pass
        self._loop.call_soon_threadsafe(self._dispatch_error, err)

    # ------------------------------------------------------------------ event-loop side
    def _dispatch(self, outputs: list) -> None:
        for out in outputs:
            t = self._requests.get(out.request_id)
            if t is not None:
                t.queue.put_nowait(out)

    def _dispatch_error(self, err: Exception) -> None:
        for t in self._requests.values():
            t.queue.put_nowait(err)

    def coalesce(self, tracked: Tracked, items: list) -> list:
        """What a stream sends for the outputs queued since it last ran: each run of consecutive outputs of one
        sample merged into one (their tokens, text and logprobs joined: one SSE chunk with a multi-token delta,
        as OpenAI clients accept), errors kept in place. One output per step when the stream keeps up."""
        out: list = []
        run: list = []
        for item in items:
            if isinstance(item, BaseException) or (run and getattr(item, "index", 0) != getattr(run[-1], "index", 0)):
                if run:
                    out += merge_outputs(run)
                    run = []
            if isinstance(item, BaseException):
                out.append(item)
            else:
                run.append(item)
        if run:
            out += merge_outputs(run)
        return out


def merge_outputs(run: list) -> Any:
    """Consecutive outputs of one sample as one (a list of one): the deltas joined, everything else from the latest."""
    last = run[-1]
    if len(run) == 1 or not dataclasses.is_dataclass(last):  # (an engine with its own output type: not merged)
        return run
    lps = [e for o in run for e in (o.logprobs or ())] if any(o.logprobs for o in run) else last.logprobs
    return [dataclasses.replace(last, new_token_ids=[t for o in run for t in o.new_token_ids],
                                text_delta="".join(o.text_delta or "" for o in run), logprobs=lps)]


def _safe_stats(engine: Any) -> dict:
    try:
        return dict(engine.stats())
    except Exception:
        return {}


class Handle:
    """An admitted request: iterate it for RequestOutputs until all samples finish.

    Leaving early (an exception, a cancelled task, `close()`) aborts the request in the engine;
    passing the deadline raises RequestTimeout."""

    def __init__(self, owner: AsyncEngine, request_id: str, tracked: Tracked):
        self.owner, self.request_id, self.tracked = owner, request_id, tracked
        self.done = self.closed = False
        # the deadline arrives as an item in the queue: no timer per awaited token
        self._timer = None if not owner.request_timeout else asyncio.get_running_loop().call_later(
            owner.request_timeout, tracked.queue.put_nowait, RequestTimeout())

    async def __aiter__(self) -> AsyncIterator[Any]:
        t = self.tracked
        interval = max(1, int(self.owner.stream_interval))
        held: dict[int, list] = {}  # per sample: outputs kept back until `interval` tokens are together
        started: set[int] = set()  # samples whose first output went out (that one is never held)
        try:
            while True:
                for item in self.owner.coalesce(t, await t.queue.get_all()):
                    if isinstance(item, BaseException):
                        raise item
                    i = getattr(item, "index", 0) or 0
                    if interval > 1 and i in started:
                        run = held.setdefault(i, [])
                        run.append(item)
                        if not item.finished and sum(len(o.new_token_ids) for o in run) < interval:
                            continue
                        merged = merge_outputs(held.pop(i))
                    else:
                        merged = [item]
                    started.add(i)
                    for out in merged:
                        if out.finished:
                            t.finished.add(i)
                        yield out
                    if len(t.finished) >= t.n:
                        self.done = True
                        return
        finally:
            self.close()

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self.owner._requests.pop(self.request_id, None)
        if not self.done and not self.closed:
            self.closed = True
            self.owner._submit(("abort", self.request_id))
