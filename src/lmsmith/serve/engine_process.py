"""The engine in its own process (as vLLM v1's EngineCore), so the HTTP process never waits for its GIL.

In one process the engine thread holds the GIL for the Python side of every step (busy ~99% of the time under
load), and a burst of requests waits to be parsed and admitted. Here the HTTP process parses, tokenizes,
streams and does flow control (`ProcessAsyncEngine`, the `AsyncEngine` interface the handlers use), and a
child process owns the `Engine` and runs schedule + step in a loop (`run_engine_core`). They talk over two
pipes with pickled tuples of token ids and text deltas; no tensors cross.

    parent -> child   ("add", rid, prompt_ids, params, submitted) | ("abort", rid) | ("stop",)
    child -> parent   ("ready", info) | ("error", message, hint)               once, after loading
                      ("step", acks, outputs, stats, failure)                   after commands and steps

`acks` answer adds (None or the error, raised to the handler: a 400 before anything streams); `outputs` are
per-sequence deltas that the parent accumulates into `RequestOutput`s; `failure` is a step that raised (its
requests fail with a 500, the engine keeps serving). A child that dies (killed, OOM, crash) closes its pipe:
requests in flight fail with a 500, new ones get a 503 and /health turns 503. The child exits when the parent
dies (its command pipe closes, or its parent pid changes).
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import logging
import multiprocessing as mp
import os
import signal
import time
import traceback
from typing import Any

from lmsmith.errors import LmsmithError
from lmsmith.serve.async_engine import AsyncEngine, EngineFailed, Handle, Inbox, QueueFull, ShuttingDown, Tracked
from lmsmith.serve.process_tuning import freeze_gc_heap, unfreeze_gc_heap
from lmsmith.serve.step_log import HttpMonitor, StepLog, graph_steps, loop_record, step_log_for, with_gc

log = logging.getLogger("lmsmith.serve")

STATS_EVERY_S = 0.05  # while busy, engine stats ride along with step outputs at most this often
READ_BATCH = 64  # messages (engine steps) read per wake-up of the pipe's reader
PIPE_BYTES = 1 << 20  # room for a burst of adds without blocking the event loop on a busy child


# ---------------------------------------------------------------------------------------------- child side
def run_engine_core(cmd_conn: Any, out_conn: Any, model_ref: str, engine_kwargs: dict, parent_pid: int,
                    engine_factory: str | None = None) -> None:
    """The child process: load the engine, say ready (or why not), then serve commands until told to stop.
    `engine_factory` ("module:name", called like `Engine`) stands another engine in (the IPC benchmark's)."""
    if engine_factory:
        import importlib

        module, _, name = engine_factory.partition(":")
        Engine = getattr(importlib.import_module(module), name)
    else:
        from lmsmith.serve.engine import Engine

    for sig in (signal.SIGINT, signal.SIGTERM):  # Ctrl-C (the process group) and systemd (the cgroup) signal us too:
        signal.signal(sig, _ignore)  # the server drains first, then stops us (or we see it die); not inherited
    _grow_pipe(out_conn)
    _share_cores(engine_kwargs.get("device"))
    try:
        engine = Engine(model_ref, **engine_kwargs)
    except LmsmithError as e:
        out_conn.send(("error", e.message, e.hint))
        return
    except BaseException as e:  # noqa: BLE001 - reported to the parent, which raises it as a clear error
        out_conn.send(("error", f"the engine failed to load: {type(e).__name__}: {e}", None))
        traceback.print_exc()
        return
    info = {"max_model_len": engine.max_model_len, "vocab_size": engine.vocab_size,
            "max_num_seqs": engine.scheduler.max_num_seqs, "device": str(engine.device), "native": engine.native,
            "eos_token_ids": list(engine.eos_token_ids), "model_ref": engine.model_ref,
            "stats": _stats(engine, 0, 0.0)}
    freeze_gc_heap()  # the loaded engine (weights' wrappers, graphs, kernels) stays out of every later collection
    try:
        out_conn.send(("ready", info))
        EngineCore(engine, cmd_conn, out_conn, parent_pid).run()
    except (BrokenPipeError, EOFError, ConnectionError):
        pass  # the server went away mid-send: nothing left to serve
    finally:
        engine.close()


def _ignore(signum: int, frame: Any) -> None:
    pass


class _Stop(Exception):
    """The parent said stop."""


class EngineCore:
    """The child's loop: apply commands, step, send acks and outputs; block on the pipe when idle."""

    def __init__(self, engine: Any, cmd_conn: Any, out_conn: Any, parent_pid: int):
        self.engine, self.cmd, self.out, self.parent_pid = engine, cmd_conn, out_conn, parent_pid
        self.live: dict[str, int] = {}  # requests added and not yet finished or aborted -> samples still running
        self.steps, self.step_seconds = 0, 0.0
        self.stats_sent = 0.0

    def run(self) -> None:
        with step_log_for("process", self.engine) as slog:
            self.loop(slog)

    def loop(self, slog: StepLog | None) -> None:
        eng = self.engine
        while True:
            idle = 0.0
            busy = eng.has_unfinished()
            if not busy:
                self.send([], [], True, None)  # idle: the final stats of the burst
                if slog is not None:
                    slog.flush()
                w = time.perf_counter()
                while not self.cmd.poll(0.5):
                    if os.getppid() != self.parent_pid:
                        return  # the server died without telling us
                idle = time.perf_counter() - w
            t0 = time.perf_counter()
            acks: list = []
            adds: list = [] if slog is not None else None
            try:
                n_cmds = self.read_commands(acks, adds)
            except (EOFError, OSError, _Stop):
                return  # told to stop, or the parent closed its end: it is gone or shutting down
            t_ack = time.perf_counter()
            if acks:  # answer the adds now, not after the step: the handlers send their headers meanwhile
                self.send(acks, [], False, None)
            outputs, failure = [], None
            t = time.perf_counter()
            g = graph_steps(eng) if slog is not None else 0
            stepped = eng.has_unfinished()
            if stepped:
                try:
                    outputs = eng.step()
                except Exception as e:  # an engine bug or an OOM: fail what is in flight, keep serving
                    traceback.print_exc()
                    failure = f"{type(e).__name__}: {e}"
                    for rid in list(self.live):
                        self.abort(rid)
                    outputs = []
                self.step_seconds += time.perf_counter() - t
                self.steps += 1
            t1 = time.perf_counter()
            packed = [pack_output(o) for o in outputs]
            for o in outputs:
                if o.finished and o.request_id in self.live:
                    self.live[o.request_id] -= 1
                    if self.live[o.request_id] <= 0:
                        del self.live[o.request_id]
            now = time.monotonic()
            # stats ride along at most every STATS_EVERY_S, and whenever a request finishes (so /metrics read after
            # a response already counts its steps)
            fresh = now - self.stats_sent > STATS_EVERY_S or any(o.finished for o in outputs)
            if packed or failure or fresh:
                self.send([], packed, fresh, failure)
            if slog is not None and (stepped or n_cmds):
                try:
                    rec = loop_record(t0, idle, adds, n_cmds - len(adds), t_ack - t0, t1 - t, eng, g, outputs,
                                      time.perf_counter() - t1, ack=t - t_ack)
                    slog.write(with_gc(rec, slog))
                except Exception:  # noqa: BLE001 - a trace must never stop the serving
                    log.exception("the step log failed; it stops here")
                    slog = None

    def read_commands(self, acks: list, adds: list | None) -> int:
        """Apply every command waiting in the pipe; returns how many. Raises _Stop when told to stop."""
        n = 0
        while self.cmd.poll():
            msg = self.cmd.recv()
            if msg[0] == "stop":
                raise _Stop()
            self.apply(msg, acks)
            n += 1
            if adds is not None and msg[0] == "add":
                adds.append((msg[1], msg[4] if len(msg) > 4 else time.time()))
        return n

    def send(self, acks: list, outputs: list, with_stats: bool, failure: str | None) -> None:
        stats = None
        if with_stats:
            stats = _stats(self.engine, self.steps, self.step_seconds)
            self.stats_sent = time.monotonic()
        self.out.send(("step", acks, outputs, stats, failure))

    def apply(self, msg: tuple, acks: list) -> None:
        if msg[0] == "abort":
            self.abort(msg[1])
            return
        rid, prompt, params = msg[1:4]
        try:
            self.engine.add_request(rid, prompt, params)
        except LmsmithError as e:
            acks.append((rid, ("LmsmithError", e.message, e.hint)))
        except ValueError as e:
            acks.append((rid, ("ValueError", str(e), None)))
        except Exception as e:  # noqa: BLE001 - the handler answers it with a 500
            acks.append((rid, ("EngineFailed", f"{type(e).__name__}: {e}", None)))
        else:
            self.live[rid] = max(1, int(getattr(params, "n", 1) or 1))
            acks.append((rid, None))

    def abort(self, rid: str) -> None:
        self.live.pop(rid, None)
        try:
            self.engine.abort(rid)
        except Exception:  # already finished or unknown: nothing to free
            pass


def pack_output(o: Any) -> tuple:
    """One RequestOutput as a small tuple of deltas. Mid-stream (the ~all of them under load): (request id, sample,
    new token ids, text delta). The sample's first output, its last and any with logprobs add the rest: finish
    reason, logprobs, cached tokens, the timings, and (last only) the full token ids and text."""
    new = list(o.new_token_ids)
    if not (o.finished or o.logprobs or len(o.token_ids) <= len(new)):
        return (o.request_id, o.index, new, o.text_delta)
    m = o.metrics
    times = None if m is None else (m.arrival_time, m.first_scheduled_time, m.first_token_time, m.finish_time)
    full = (list(o.token_ids), o.text) if o.finished else None
    return (o.request_id, o.index, new, o.text_delta, o.finished, o.finish_reason, getattr(o, "stop_reason", None),
            o.logprobs, o.num_cached_tokens, times, full)


def _stats(engine: Any, steps: int, step_seconds: float) -> dict:
    try:
        s = dict(engine.stats())
    except Exception:
        s = {}
    return s | {"engine_steps": steps, "engine_step_seconds": step_seconds}


def _share_cores(device: str | None) -> None:
    """On CPU, leave one core to the HTTP process: its event loop runs at the same time now, and an OpenMP team
    whose thread is descheduled stalls every op at its barrier (measured: steps 28x slower with all cores)."""
    import torch

    if os.environ.get("OMP_NUM_THREADS") or (device or ("cuda" if torch.cuda.is_available() else "cpu")) != "cpu":
        return
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), cores - 1)))


def _grow_pipe(conn: Any) -> None:
    """Linux pipes hold 64 KiB by default; a larger buffer keeps a burst of requests from blocking the writer."""
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), 1031, PIPE_BYTES)  # F_SETPIPE_SZ
    except Exception:
        pass


# ---------------------------------------------------------------------------------------------- parent side
class EngineClient:
    """What the HTTP process holds in place of an `Engine`: the tokenizer and the engine's limits here, the
    engine itself in a child process (started now; this returns once the model is loaded there).

    `startup_timeout` bounds the load (None: wait as long as the child is alive); `engine_factory` ("module:name")
    replaces `Engine` in the child."""

    in_process = False

    def __init__(self, model_ref: Any, startup_timeout: float | None = None, engine_factory: str | None = None,
                 **engine_kwargs: Any):
        from lmsmith.models import load_tokenizer, resolve_model

        model = resolve_model(model_ref)  # a bad ref fails here, before a process starts
        ctx = mp.get_context("spawn")  # never fork a process that may hold CUDA or threads
        cmd_r, self._cmd = ctx.Pipe(duplex=False)
        self._out, out_w = ctx.Pipe(duplex=False)
        _grow_pipe(self._cmd)
        ref = model.name  # canonical (NAME@V or the path): the child loads exactly this version
        self.proc = ctx.Process(target=run_engine_core,
                                args=(cmd_r, out_w, ref, engine_kwargs, os.getpid(), engine_factory),
                                name="lmsmith-engine-core", daemon=False)  # daemonic processes cannot start TP workers
        self.proc.start()
        cmd_r.close()
        out_w.close()  # the child holds the only write end: its exit reads as EOF here
        self.closed = False
        atexit.register(self.close)
        try:
            self.tokenizer = load_tokenizer(model)
            info = self._wait_ready(startup_timeout)  # the tokenizer loaded above while the child loads the weights
        except BaseException:
            self.close()
            raise
        self.model_ref = info["model_ref"]
        self.max_model_len = int(info["max_model_len"])
        self.vocab_size = int(info["vocab_size"])
        self.max_num_seqs = int(info["max_num_seqs"])
        self.device = info["device"]
        self.native = info["native"]
        self.eos_token_ids = info["eos_token_ids"]
        self.last_stats: dict = info["stats"]

    def _wait_ready(self, timeout: float | None) -> dict:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._out.poll(0.2):
            if not self.proc.is_alive():
                raise LmsmithError(f"the engine process exited with status {self.proc.exitcode} while loading the model",
                                   "see the log above; or serve in one process with --no-engine-process")
            if deadline is not None and time.monotonic() > deadline:
                raise LmsmithError(f"the engine process did not load the model within {timeout:g} s")
        try:
            msg = self._out.recv()
        except EOFError:
            self.proc.join(5)
            raise LmsmithError(f"the engine process exited with status {self.proc.exitcode} while loading the model",
                               "see the log above") from None
        if msg[0] == "error":
            self.proc.join(10)
            raise LmsmithError(msg[1], msg[2])
        return msg[1]

    def stats(self) -> dict:
        return self.last_stats

    def update_weights(self, weights: Any) -> int:
        raise LmsmithError("cannot push weights into an engine running in its own process",
                           "use an in-process engine (lmsmith.serve.LLM, or `lmsmith serve --no-engine-process`)")

    def send(self, msg: tuple) -> None:
        self._cmd.send(msg)

    def fileno(self) -> int:
        """The pipe the child's messages arrive on (for the event loop's reader)."""
        return self._out.fileno()

    def poll(self) -> bool:
        return self._out.poll()

    def recv(self) -> tuple:
        return self._out.recv()

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child (politely, then by force) and close the pipes. Idempotent."""
        if self.closed:
            return
        self.closed = True
        atexit.unregister(self.close)
        try:
            self._cmd.send(("stop",))
        except (OSError, ValueError):
            pass
        self.proc.join(timeout)
        if self.proc.is_alive():  # stuck (e.g. in a kernel): it ignores SIGTERM, so kill
            self.proc.kill()
            self.proc.join(5)
        for c in (self._cmd, self._out):
            try:
                c.close()
            except OSError:
                pass


class ProcessAsyncEngine(AsyncEngine):
    """`AsyncEngine` over an `EngineClient`: the same admission, timeout, abort and drain, with the step loop in
    the child. Outputs are read on the event loop itself (`add_reader` on the pipe): no thread here competes
    for the GIL."""

    def __init__(self, engine: EngineClient, max_num_seqs: int = 64, max_queue: int = 256,
                 request_timeout: float | None = 600.0):
        super().__init__(engine, max_num_seqs=max_num_seqs, max_queue=max_queue, request_timeout=request_timeout)
        self._adds: dict[str, asyncio.Future] = {}
        self.dead = False

    def _snapshot(self) -> dict:
        return dict(self.engine.last_stats)

    @property
    def alive(self) -> bool:
        return not self.dead

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        freeze_gc_heap()
        self._monitor = HttpMonitor.from_env()
        if self._monitor is not None:
            self._monitor.start()
        self._loop.add_reader(self.engine.fileno(), self._on_readable)

    def stop(self) -> None:
        """Stop the child. Callable from the event loop or from another thread (the router retires engines
        from a worker thread): the pipe's reader is removed on the loop before the pipe closes."""
        loop = self._loop
        if loop is not None and not self.dead and not loop.is_closed():
            self.dead = True  # our own shutdown: the pipe's EOF is not a crash
            try:
                on_loop = asyncio.get_running_loop() is loop
            except RuntimeError:
                on_loop = False
            if on_loop:
                self._remove_reader()
            else:
                done = concurrent.futures.Future()

                def remove() -> None:
                    self._remove_reader()
                    done.set_result(None)

                loop.call_soon_threadsafe(remove)
                with contextlib.suppress(Exception):
                    done.result(5)
        self.engine.close()
        self._stop_monitor()
        unfreeze_gc_heap()

    def _remove_reader(self) -> None:
        with contextlib.suppress(ValueError, OSError, RuntimeError):
            self._loop.remove_reader(self.engine.fileno())

    async def add(self, request_id: str, prompt: list[int] | str, params: Any) -> Handle:
        if not self.accepting:
            raise ShuttingDown()
        if self.dead:
            raise EngineFailed(self.error or "the engine process is not running")
        if len(self._requests) >= self.capacity:
            raise QueueFull()
        tracked = Tracked(Inbox(), n=max(1, int(getattr(params, "n", 1) or 1)), prompt=prompt)
        self._requests[request_id] = tracked
        ack = self._loop.create_future()
        self._adds[request_id] = ack
        try:
            self._submit(("add", request_id, prompt, params, time.time()))
            try:
                await asyncio.wait_for(ack, self.request_timeout) if self.request_timeout else await ack
            except asyncio.TimeoutError:
                raise EngineFailed(f"the engine process did not take the request within {self.request_timeout:g} s") \
                    from None
        except BaseException:
            self._adds.pop(request_id, None)
            self._abort(request_id)
            raise
        return Handle(self, request_id, tracked)

    def _submit(self, command: tuple) -> None:
        if self.dead or self.engine.closed:
            return
        try:
            self.engine.send(command)
        except (OSError, ValueError) as e:  # the child is gone; its EOF will fail the requests
            log.warning("could not reach the engine process: %s", e)

    # ------------------------------------------------------------------ reading the child's messages
    def _on_readable(self) -> None:
        eng = self.engine
        try:
            for _ in range(READ_BATCH):  # what is left waits one loop turn (the streams run in between)
                self._handle(eng.recv())
                if not eng.poll():
                    break
        except (EOFError, OSError):
            self._child_gone()

    def _handle(self, msg: tuple) -> None:
        _, acks, outputs, stats, failure = msg
        for rid, err in acks:
            fut = self._adds.pop(rid, None)
            if fut is None or fut.done():
                continue
            if err is None:
                fut.set_result(None)
            else:
                kind, message, hint = err
                fut.set_exception(LmsmithError(message, hint) if kind == "LmsmithError" else
                                  ValueError(message) if kind == "ValueError" else EngineFailed(message))
        requests = self._requests
        for packed in outputs:  # routed as they came: unpacked (and merged) when the stream runs (`coalesce`)
            t = requests.get(packed[0])
            if t is not None:
                t.queue.put_nowait(packed)
        if stats is not None:
            self.engine.last_stats = stats
            self._stats = stats
            self.steps, self.step_seconds = stats.get("engine_steps", 0), stats.get("engine_step_seconds", 0.0)
        if failure is not None:
            log.error("engine step failed: %s", failure)
            self.error = failure
            self._dispatch_error(EngineFailed(failure))

    def coalesce(self, tracked: Tracked, items: list) -> list:
        """The packed deltas queued for a stream as RequestOutputs: each run of one sample's deltas as one."""
        out: list = []
        run: list = []
        for item in items:
            if isinstance(item, BaseException) or (run and item[1] != run[-1][1]):
                if run:
                    out.append(unpack_outputs(run, tracked))
                    run = []
            if isinstance(item, BaseException):
                out.append(item)
            else:
                run.append(item)
        if run:
            out.append(unpack_outputs(run, tracked))
        return out

    def _child_gone(self) -> None:
        if self.dead:
            return
        self.dead = True
        self._remove_reader()
        proc = self.engine.proc
        proc.join(1)
        if not self.engine.closed:  # not our own shutdown: say so loudly
            self.error = f"the engine process exited unexpectedly (exit status {proc.exitcode})"
            log.error("%s; requests in flight fail, new ones get 503", self.error)
        else:
            self.error = "the engine process was stopped"
        err = EngineFailed(self.error)
        for fut in self._adds.values():
            if not fut.done():
                fut.set_exception(err)
        self._adds.clear()
        self._dispatch_error(err)


def unpack_outputs(run: list, tracked: Tracked) -> Any:
    """One RequestOutput, as the engine would have made it, from consecutive packed deltas of one sample (one, when
    the stream keeps up) and what the sample has so far (`tracked.acc[index]`: ids, text, cached tokens, timings)."""
    from lmsmith.serve.engine import RequestOutput
    from lmsmith.serve.sequence import RequestMetrics

    rid, index = run[0][0], run[0][1]
    acc = tracked.acc.get(index)
    if acc is None:
        acc = tracked.acc[index] = [[], "", 0, None]
    new: list[int] = []
    deltas: list[str] = []
    finished, reason, stop, logprobs, full = False, None, None, None, None
    for p in run:
        new += p[2]
        deltas.append(p[3])
        if len(p) > 4:
            _, _, _, _, finished, reason, stop, lps, cached, times, full = p
            if lps:
                logprobs = (logprobs or []) + list(lps)
            acc[2] = cached
            if times is not None:
                acc[3] = times
    delta = "".join(deltas)
    if full is not None:
        acc[0], acc[1] = full
    else:
        acc[0] += new
        acc[1] += delta
    times = acc[3]
    metrics = None if times is None else RequestMetrics(times[0], times[1], times[2], times[3])
    # token_ids is the sample's growing list, as the in-process engine hands out its sequence's (no copy per token)
    return RequestOutput(request_id=rid, index=index, new_token_ids=new, text_delta=delta, token_ids=acc[0],
                         text=acc[1], finished=finished, finish_reason=reason, stop_reason=stop, logprobs=logprobs,
                         prompt_token_ids=tracked.prompt, num_cached_tokens=acc[2], metrics=metrics)


def default_engine_process(device: str | None, tensor_parallel_size: int = 1) -> bool:
    """On one GPU the engine loop runs in its own process by default. One H100, 32 streams x (128 in, 256 out),
    with the prefill graphs (bench/results/serve_load-h100-round5.json): TTFT p50 / p99 24.3 / 31.1 ms and TPOT
    1.58 ms in the child vs 54.1 / 63.9 ms and 1.65 ms with the engine in a thread of the HTTP process (another
    host: 37-47 / 48-58 ms in the child). On a CPU the child competes with the HTTP process for the same few cores
    and no gain was measured, and tensor-parallel ranks are not run from the child: the thread there.
    `--no-engine-process` / `--engine-process` choose explicitly."""
    if tensor_parallel_size > 1:
        return False
    if device is None:
        import torch

        return torch.cuda.is_available()
    return str(device).startswith("cuda")


def make_async_engine(engine: Any, max_num_seqs: int = 64, max_queue: int = 256,
                      request_timeout: float | None = 600.0) -> AsyncEngine:
    """The async front of an engine: over a child process for an `EngineClient`, else a thread in this process."""
    cls = ProcessAsyncEngine if getattr(engine, "in_process", True) is False else AsyncEngine
    return cls(engine, max_num_seqs=max_num_seqs, max_queue=max_queue, request_timeout=request_timeout)
