"""Kernel checks run under Triton's CPU interpreter, in a subprocess (TRITON_INTERPRET must be set before Triton is
imported). Skipped where Triton is not installed, as on the CPU CI; the GPU tests run the same kernels compiled."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

needs_triton = pytest.mark.skipif(importlib.util.find_spec("triton") is None,
                                  reason="Triton is not installed (CPU-only torch)")


def run_check(script: Path, *args: str, timeout: int = 900) -> str:
    """The script's stdout; fails the test with its output's tail when it exits non-zero."""
    out = subprocess.run([sys.executable, str(script), *args], env={**os.environ, "TRITON_INTERPRET": "1"},
                         capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-4000:]
    return out.stdout
