"""CPython settings for a serving process, where a few milliseconds of stall show in every stream's latency.

- `freeze_gc_heap`: after start-up, everything alive (the model and its runner, torch, the web stack) moves to the
  collector's permanent generation, so a full collection no longer walks it while holding the GIL.
- `frozen_while`: the same for the length of one call (the offline `LLM.generate`), given back at its end.
- `shorten_switch_interval`: while an engine runs in a thread of the HTTP process, the GIL changes hands every 1 ms
  instead of 5, so neither the engine thread nor the event loop waits long for the other.
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import threading
from collections.abc import Iterator

GC_FREEZE_ENV = "LMSMITH_GC_FREEZE"


def freeze_gc_heap() -> bool:
    """Collect once, then move every object alive now (the model and its runner, torch, the web stack: a few hundred
    thousand objects) into the collector's permanent generation, as vLLM's engine does after start-up. Otherwise a
    full (gen 2) collection, which a long serving run triggers now and then, walks them all while holding the GIL:
    160-176 ms on a CPU server with a tiny model, a stall of the engine loop and the event loop that shows as the
    TTFT p99 of a whole burst. Returns whether it froze ($LMSMITH_GC_FREEZE=0: off)."""
    if os.environ.get(GC_FREEZE_ENV, "1") == "0":
        return False
    gc.collect()
    gc.freeze()
    return True


SWITCH_ENV = "LMSMITH_SWITCH_INTERVAL_MS"
SWITCH_INTERVAL_MS = 1.0


def switch_interval_s() -> float | None:
    """The GIL switch interval for a server whose engine runs in a thread ($LMSMITH_SWITCH_INTERVAL_MS, default 1;
    0 leaves Python's 5 ms). The engine thread and the event loop share the GIL: a thread that wants it waits up to
    the interval for the holder to let go, so with 5 ms the engine thread picks a burst's requests up late and the
    event loop streams first tokens late (CPU stand-in at H100 step times: TTFT p50 33 -> 29 ms, pickup 4.8 -> 3.6
    ms, TPOT unchanged)."""
    try:
        ms = float(os.environ.get(SWITCH_ENV, SWITCH_INTERVAL_MS))
    except ValueError:
        ms = SWITCH_INTERVAL_MS
    return ms / 1000 if ms > 0 else None


_switch = {"users": 0, "saved": None}
_switch_lock = threading.Lock()


def shorten_switch_interval() -> bool:
    """Shorten the GIL switch interval while engine threads run: the first to start saves the current interval, the
    last to stop (`restore_switch_interval`) puts it back. Returns whether the caller holds a share."""
    interval = switch_interval_s()
    if interval is None:
        return False
    with _switch_lock:
        if _switch["users"] == 0:
            _switch["saved"] = sys.getswitchinterval()
            sys.setswitchinterval(min(interval, _switch["saved"]))
        _switch["users"] += 1
    return True


def restore_switch_interval() -> None:
    with _switch_lock:
        _switch["users"] -= 1
        if _switch["users"] == 0 and _switch["saved"] is not None:
            sys.setswitchinterval(_switch["saved"])


def unfreeze_gc_heap() -> None:
    """Give the frozen objects back to the collector (an engine is being retired: its cycles must be collectable)."""
    gc.unfreeze()


@contextlib.contextmanager
def frozen_while() -> Iterator[None]:
    """Freeze the heap for the length of a call (without collecting first), then give it back: the objects alive at
    its start (the model, its runner, the caller's own) leave the collector's view, new garbage is still collected.
    An offline batch-1 generation spends ~1% of its time in collections otherwise (H100, 1B shape: 1.1126 ms a token
    with the collector off vs 1.1233 on, bench/results/speed_round2_notes.md round 6; this is the form of that which
    leaks nothing). Nothing happens where
    the heap is already frozen (a server) or $LMSMITH_GC_FREEZE=0."""
    mine = gc.get_freeze_count() == 0 and os.environ.get(GC_FREEZE_ENV, "1") != "0"
    if mine:
        gc.freeze()
    try:
        yield
    finally:
        if mine:
            gc.unfreeze()
