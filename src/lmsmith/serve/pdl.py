"""Programmatic dependent launch (Hopper and later) for the decode step's Triton kernels.

At batch 1 a decode step is ~130 short kernels, and each one's launch (grid set-up, first loads in flight) waits for
the previous kernel to drain. With PDL a kernel may be scheduled while its predecessor is still finishing: it calls
`griddepcontrol.wait` (which returns once the predecessor has completed and its writes are visible) before touching
memory, then lets its own successor launch. Every kernel taking part waits first, so the memory order is the plain
stream order; only the launch latency overlaps. cuBLAS kernels in between do not take part (the next kernel then
launches as usual).

Off by default: the batch-1 graph tuner captures its best step with and without it and keeps the faster replay;
`LMSMITH_PDL=1` turns it on for every capture (A/B runs), `LMSMITH_PDL=0` never."""

from __future__ import annotations

import os
from contextlib import contextmanager

import torch

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait  # noqa: F401 - used inside kernels
    HAVE_GDC = True
except ImportError:  # Triton without griddepcontrol (< 3.3) or no Triton at all
    gdc_launch_dependents = gdc_wait = None
    HAVE_GDC = False

_active = False


def supported(device: torch.device) -> bool:
    return HAVE_GDC and device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9 and \
        os.environ.get("LMSMITH_PDL", "") != "0"


def forced() -> bool:
    return os.environ.get("LMSMITH_PDL", "") == "1"


@contextmanager
def active(on: bool):
    """Kernels launched inside (a CUDA-graph capture) use PDL when `on`."""
    global _active
    prev, _active = _active, bool(on) and HAVE_GDC
    try:
        yield
    finally:
        _active = prev


def launch() -> dict:
    """Extra launch arguments of a participating kernel: its PDL constexpr and Triton's launch flag."""
    return {"PDL": True, "launch_pdl": True} if _active else {}
