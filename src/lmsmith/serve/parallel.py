"""Tensor-parallel serving processes (the sharded layers are serve/tp_layers.py).

Process model: rank 0 is the engine's own process (scheduler, sampling, detokenizing). Ranks 1..tp-1 are spawned
workers that load only their shard and repeat every runner call rank 0 makes: each step rank 0 sends them the
scheduled batch (token ids, positions, block tables) over a pipe, so all ranks issue the same collectives in the
same order. NCCL on CUDA (the all-reduces are captured inside the decode CUDA graphs), gloo on CPU (tests).
"""

from __future__ import annotations

import atexit
import os
import pickle
import signal
import socket
import sys
import threading
import time
import traceback
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

from lmsmith.errors import LmsmithError
from lmsmith.serve.model_runner import NativeRunner
from lmsmith.serve.tp_layers import TPContext
from lmsmith.serve.weights import ModelHandle

STARTUP_TIMEOUT_S = float(os.environ.get("LMSMITH_TP_STARTUP_TIMEOUT", 1800))
HANG_GRACE_S = 15.0  # after a worker died: how long rank 0 may stay stuck in a collective before it exits


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _init_group(rank: int, size: int, port: int, device: torch.device) -> TPContext:
    backend = "nccl" if device.type == "cuda" else "gloo"
    kw: dict[str, Any] = {}
    if device.type == "cuda":
        torch.cuda.set_device(device)
        kw["device_id"] = device
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=size,
                            timeout=timedelta(minutes=30), **kw)
    return TPContext(rank, size, backend)


def cuda_graphs_capture_collectives(tp: TPContext, device: torch.device) -> bool:
    """Can an all-reduce be captured in a CUDA graph here? Decided together (MIN over ranks), so every rank takes
    the same path; when not, decode runs eagerly."""
    ok = 1
    try:
        x = torch.ones(8, device=device)
        dist.all_reduce(x)
        torch.cuda.synchronize(device)
        y = torch.zeros(8, device=device)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            y.fill_(1.0)
            dist.all_reduce(y)
        g.replay()
        torch.cuda.synchronize(device)
        ok = int(bool(torch.all(y == tp.size)))
    except Exception as e:  # noqa: BLE001 - any failure means: no graphs
        print(f"[lmsmith tp rank {tp.rank}] CUDA graph capture of an all-reduce failed: {type(e).__name__}: {e}",
              file=sys.stderr)
        ok = 0
    flag = torch.tensor([ok], device=device)
    dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def prepare_kv(runner: Any, tp: TPContext, num_blocks: int, block_size: int, max_num_seqs: int) -> None:
    """allocate_kv on one rank, after agreeing whether decode CUDA graphs (with their all-reduces) are usable."""
    if runner.use_cuda_graphs:
        if os.environ.get("LMSMITH_TP_CUDA_GRAPHS", "1") == "0":
            runner.use_cuda_graphs = False
        elif not cuda_graphs_capture_collectives(tp, runner.device):
            runner.use_cuda_graphs = False
            if tp.rank == 0:
                print("lmsmith: CUDA graphs with NCCL all-reduce are not capturable here; tensor-parallel decode "
                      "runs eagerly (slower)", file=sys.stderr)
    runner.allocate_kv(num_blocks, block_size, max_num_seqs)


class _Tokens:
    """The part of a sequence's token list a step reads, indexed by absolute position."""

    __slots__ = ("start", "chunk")

    def __init__(self, start: int, chunk: list[int]):
        self.start, self.chunk = start, chunk

    def _local(self, i: int) -> int:
        i = i + len(self) if i < 0 else i
        if i < self.start:
            raise IndexError(f"token {i} was not sent to this tensor-parallel worker")
        return i - self.start

    def __getitem__(self, i):
        if isinstance(i, slice):
            a = self._local(0 if i.start is None else i.start)
            b = len(self.chunk) if i.stop is None else max(a, min(len(self.chunk), self._local(i.stop)))
            return self.chunk[a:b:i.step]
        return self.chunk[self._local(i)]

    def __len__(self) -> int:
        return self.start + len(self.chunk)


class _SeqView:
    """What a worker needs of a `Sequence` to build the same model inputs as rank 0."""

    __slots__ = ("tokens", "block_table", "num_tokens", "num_computed")

    def __init__(self, start: int, chunk: list[int], table: list[int], samples: bool):
        self.tokens = _Tokens(start, chunk)
        self.block_table = table
        self.num_computed = start
        self.num_tokens = start + len(chunk) + (0 if samples else 1)


def pack_batch(batch: list) -> list[tuple]:
    return [(s.start, s.seq.tokens[s.start:s.start + s.num_tokens], s.seq.block_table, s.samples) for s in batch]


def unpack_batch(packed: list[tuple]) -> list:
    from lmsmith.serve.scheduler import ScheduledSeq

    return [ScheduledSeq(_SeqView(start, chunk, table, samples), start, len(chunk))
            for start, chunk, table, samples in packed]


def destroy_group(timeout: float = 20.0) -> bool:
    """Leave the process group, but never hang on it: NCCL's teardown can block (e.g. on a peer that is gone), so
    it runs in a daemon thread that is given `timeout` seconds. True when it finished."""
    if not dist.is_initialized():
        return True
    t = threading.Thread(target=dist.destroy_process_group, name="lmsmith-tp-destroy", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        print(f"lmsmith: tensor-parallel process group teardown did not finish in {timeout:.0f} s; leaving it",
              file=sys.stderr)
        return False
    return True


def _exit_with_parent(ppid: int) -> None:
    """A worker blocked in a collective on a dead rank 0 would never return: exit when the parent is gone."""
    while os.getppid() == ppid:
        time.sleep(1.0)
    os._exit(1)


def _worker_main(rank: int, size: int, port: int, device_type: str, ref: str, dtype: torch.dtype,
                 max_model_len: int, load_format: str, cmd_conn, status_conn) -> None:
    """A worker rank: load this rank's shard, then repeat rank 0's runner calls until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C goes to rank 0, which shuts the workers down
    code = 0
    try:
        status_conn.send(("hello", None))  # imports done: rank 0 may now wait in the rendezvous with us

        device = torch.device(device_type, rank) if device_type == "cuda" else torch.device("cpu")
        if device_type == "cpu":
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // size))
        tp = _init_group(rank, size, port, device)
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
        runner = NativeRunner(ModelHandle(ref), dtype, device, max_model_len, tp=tp, load_format=load_format)
        status_conn.send(("ready", None))
        fences: list = []
        while True:
            if not cmd_conn.poll(1.0):
                continue
            method, payload = pickle.loads(cmd_conn.recv_bytes())
            if method == "execute":
                runner.execute(unpack_batch(payload))
                if device.type == "cuda":  # the pinned input buffer is refilled next step: wait for this copy
                    torch.cuda.synchronize(device)
            elif method == "decode_step":  # overlapped: no full sync; wait only for the previous step
                packed, src_rows, n_prev = payload
                prev = None
                if n_prev:
                    prev = torch.empty(n_prev, dtype=torch.long, device=device)
                    dist.broadcast(prev, src=0)
                runner.decode_step(unpack_batch(packed), prev, src_rows)
                if device.type == "cuda":
                    fences.append(torch.cuda.Event())
                    fences[-1].record()
                    if len(fences) > 1:  # the next step refills the buffer this one (n-1) read
                        fences.pop(0).synchronize()
            elif method == "allocate_kv":
                prepare_kv(runner, tp, *payload)
            elif method == "close":
                break
        runner.release_graphs()  # graphs holding NCCL work first, or the teardown hangs
        destroy_group()
    except (EOFError, BrokenPipeError, ConnectionResetError):
        code = 1  # rank 0 is gone
    except BaseException as e:  # noqa: BLE001 - report anything to rank 0, then exit non-zero
        msg = f"{type(e).__name__}: {e}"
        if isinstance(e, LmsmithError) and e.hint:
            msg += f" ({e.hint})"
        traceback.print_exc(file=sys.stderr)
        try:
            status_conn.send(("error", msg))
        except Exception:  # noqa: BLE001
            pass
        code = 1
    sys.stderr.flush()
    os._exit(code)  # skip interpreter teardown: nothing left to flush, and NCCL teardown can block


class TPRunner:
    """Rank 0's runner: its own shard (a NativeRunner) plus the worker ranks, which mirror every call.

    Only the runner calls below are mirrored; any other method of the wrapped runner is hidden on purpose (a call
    rank 0 made alone would leave the workers out of its collectives)."""

    native = True
    _MIRRORED_SAFE = ("kv_bytes_per_block",)  # local computations without collectives

    def __init__(self, mh: Any, dtype: torch.dtype, device: torch.device, max_model_len: int, tp_size: int,
                 load_format: str = "auto"):
        import multiprocessing as mp

        if dist.is_initialized():
            raise LmsmithError("a torch.distributed process group already exists in this process",
                               "close the other tensor-parallel engine first (engine.close()), or run outside torchrun")
        self.size = tp_size
        self.failed: str | None = None
        self._closing = False
        self._in_step = False  # True while rank 0 runs a step: still True after a Ctrl-C inside one
        self._touched = 0.0  # last time the engine called us (tells a stuck rank 0 from one that got the error)
        self._lock = threading.Lock()
        ctx = mp.get_context("spawn")
        port = _free_port()
        device = torch.device("cuda", 0) if device.type == "cuda" else device
        self.procs, self.cmds, self.status = [], [], []
        for rank in range(1, tp_size):
            cmd_r, cmd_w = ctx.Pipe(duplex=False)
            st_r, st_w = ctx.Pipe(duplex=False)
            p = ctx.Process(target=_worker_main, name=f"lmsmith-tp{rank}", daemon=True,
                            args=(rank, tp_size, port, device.type, str(mh.handle.ref), dtype, max_model_len,
                                  load_format, cmd_r, st_w))
            p.start()
            cmd_r.close()
            st_w.close()
            self.procs.append(p)
            self.cmds.append(cmd_w)
            self.status.append(st_r)
        atexit.register(self.close)
        try:
            self._wait_for("hello")
            tp = _init_group(0, tp_size, port, device)
            self.tp = tp
            self.local = NativeRunner(mh, dtype, device, max_model_len, tp=tp, load_format=load_format)
            self._wait_for("ready")
        except BaseException:
            self.close()
            raise
        self._monitor = threading.Thread(target=self._watch, name="lmsmith-tp-monitor", daemon=True)
        self._monitor.start()

    # -- what the engine calls -------------------------------------------------------------------------------
    def __getattr__(self, name: str) -> Any:
        if name in ("local", "procs"):
            raise AttributeError(name)
        value = getattr(self.local, name)
        if callable(value) and name not in self._MIRRORED_SAFE:
            raise AttributeError(f"{name} is not mirrored to the tensor-parallel workers")
        return value

    def allocate_kv(self, num_blocks: int, block_size: int, max_num_seqs: int = 64) -> None:
        self._send("allocate_kv", (num_blocks, block_size, max_num_seqs))
        self._guard(lambda: prepare_kv(self.local, self.tp, num_blocks, block_size, max_num_seqs))

    def execute(self, batch: list) -> torch.Tensor:
        self._send("execute", pack_batch(batch))
        return self._guard(lambda: self.local.execute(batch))

    @property
    def supports_overlap(self) -> bool:
        """Overlapped decoding (a step launched from the previous step's tokens, still on rank 0's GPU, which are
        broadcast to the workers): opt-in with LMSMITH_TP_OVERLAP=1 until measured on GPUs."""
        return os.environ.get("LMSMITH_TP_OVERLAP", "0") == "1"

    def decode_step(self, batch: list, prev_tokens: torch.Tensor | None, src_rows: list[int]):
        n_prev = 0 if prev_tokens is None else int(prev_tokens.shape[0])
        self._send("decode_step", (pack_batch(batch), list(src_rows), n_prev))

        def run():
            if n_prev:
                dist.broadcast(prev_tokens.contiguous(), src=0)
            return self.local.decode_step(batch, prev_tokens, src_rows)

        return self._guard(run)

    def close(self) -> None:
        """Stop the workers and leave the process group; safe to call twice (also runs at exit)."""
        with self._lock:
            self._touched = time.monotonic()
            if self._closing:
                return
            self._closing = True
        healthy = self.failed is None and not self._in_step  # interrupted mid-step: workers wait in a collective
        for c in self.cmds:
            try:
                c.send_bytes(pickle.dumps(("close", None)))
            except (OSError, ValueError):
                healthy = False
        tp = getattr(self, "tp", None)
        if healthy and tp is not None and tp.backend == "nccl" and dist.is_initialized():
            # NCCL: every rank tears its communicator down at the same time (as the workers do now), after
            # dropping the CUDA graphs that captured its all-reduces (pytorch/pytorch#115388)
            local = self.__dict__.get("local")
            if local is not None:
                local.release_graphs()
            destroy_group()
        deadline = time.monotonic() + (30 if healthy else 2)
        for p in self.procs:
            p.join(max(0.1, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                healthy = False
                p.terminate()
                p.join(5)
            if p.is_alive():
                p.kill()
                p.join(5)
        if dist.is_initialized() and tp is not None and tp.backend == "gloo":
            destroy_group()  # gloo: after the workers left (a dead NCCL peer is not waited for)
        for c in self.cmds + self.status:
            c.close()
        atexit.unregister(self.close)

    # -- internals -------------------------------------------------------------------------------------------
    def _send(self, method: str, payload: Any) -> None:
        self._touched = time.monotonic()
        if self.failed is not None:
            raise LmsmithError(f"tensor-parallel worker failed ({self.failed}); the engine has stopped",
                               "restart the engine")
        if self._closing:
            raise LmsmithError("the tensor-parallel engine is closed")
        data = pickle.dumps((method, payload), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            for c in self.cmds:
                c.send_bytes(data)
        except (OSError, ValueError):
            if not self._settle():
                self.failed = "its command pipe closed"
            raise LmsmithError(f"tensor-parallel worker failed ({self.failed}); the engine has stopped",
                               "restart the engine") from None

    def _guard(self, fn):
        self._in_step = True
        try:
            out = fn()
            self._in_step = False
            return out
        except Exception:
            if self._settle():
                raise LmsmithError(f"tensor-parallel worker failed ({self.failed}); the engine has stopped",
                                   "restart the engine") from None
            raise

    def _settle(self, wait: float = 5.0) -> bool:
        """After an error on rank 0: give the monitor a moment to learn whether a worker died (the usual cause)."""
        end = time.monotonic() + wait
        while self.failed is None and time.monotonic() < end:
            if any(not p.is_alive() for p in self.procs):
                self._record_death()
                break
            time.sleep(0.05)
        return self.failed is not None

    def _wait_for(self, what: str) -> None:
        """Wait until every worker reported `what`; a worker's error (or death) is raised here, on rank 0."""
        from multiprocessing.connection import wait

        pending = dict(enumerate(self.status))
        end = time.monotonic() + STARTUP_TIMEOUT_S
        while pending:
            if time.monotonic() > end:
                raise LmsmithError(f"tensor-parallel workers did not start within {STARTUP_TIMEOUT_S:.0f} s",
                                   "set LMSMITH_TP_STARTUP_TIMEOUT to wait longer")
            ready = wait(list(pending.values()) + [p.sentinel for p in self.procs], timeout=1.0)
            for i, conn in list(pending.items()):
                if conn in ready:
                    try:
                        kind, msg = conn.recv()
                    except EOFError:
                        kind, msg = "error", f"exited with code {self.procs[i].exitcode}"
                    if kind == "error":
                        raise LmsmithError(f"tensor-parallel rank {i + 1} failed while starting: {msg}")
                    if kind == what:
                        del pending[i]
            for i, p in enumerate(self.procs):
                if i in pending and not p.is_alive() and not pending[i].poll():
                    raise LmsmithError(f"tensor-parallel rank {i + 1} exited while starting (code {p.exitcode})",
                                       "see its error above")

    def _record_death(self) -> None:
        for i, (p, conn) in enumerate(zip(self.procs, self.status)):
            msg = None
            try:
                while conn.poll():
                    kind, m = conn.recv()
                    if kind == "error":
                        msg = m
            except (EOFError, OSError):
                pass
            if msg is not None or not p.is_alive():
                self.failed = f"rank {i + 1}: {msg or f'exited (code {p.exitcode})'}"
                return

    def _watch(self) -> None:
        """Monitor thread: notice a worker that died. A collective on rank 0 can wait forever on a dead NCCL peer,
        so after a grace period the process exits with the worker's error instead of hanging."""
        from multiprocessing.connection import wait

        while not self._closing:
            try:
                ready = wait(self.status + [p.sentinel for p in self.procs], timeout=1.0)
            except (OSError, ValueError):
                return
            if self._closing:
                return
            if not ready:
                continue
            self._record_death()
            if self.failed is None:
                continue
            print(f"lmsmith: tensor-parallel worker failed: {self.failed}", file=sys.stderr)
            if self.tp.backend != "nccl":
                return  # gloo raises on rank 0 when its peer is gone
            failed_at = time.monotonic()
            time.sleep(HANG_GRACE_S)
            if not self._closing and self._touched < failed_at:  # no call since: rank 0 is blocked on the GPU
                print("lmsmith: rank 0 is stuck waiting for the dead worker; exiting", file=sys.stderr)
                sys.stderr.flush()
                for p in self.procs:
                    if p.is_alive():
                        p.kill()
                os._exit(1)
            return
