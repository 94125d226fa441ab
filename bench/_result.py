"""One shape for every benchmark result (every bench script writes through here): {"benchmark", "device", "date", "command", "versions", "metrics"}.

Each bench script builds its metrics and calls `write_result`; the device name, UTC date, exact command line
and library versions are filled in the same way everywhere, so results from different scripts compare.
"""
from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any


def device_name(device: Any = "cpu") -> str:
    """The GPU's marketing name, or the CPU with its core count (CPU numbers depend on both)."""
    kind = getattr(device, "type", str(device)).split(":")[0]
    if kind == "cuda":
        import torch

        n = torch.cuda.device_count()
        name = torch.cuda.get_device_name(device if not isinstance(device, str) else None)
        return name if n == 1 else f"{n}x {name}"
    return f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})"


def versions(*extra: str) -> dict[str, str]:
    """Versions of python, torch, transformers, lmsmith and any `extra` distributions that are installed."""
    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "lmsmith", *extra):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            mod = sys.modules.get(name)
            if mod is not None and hasattr(mod, "__version__"):
                out[name] = str(mod.__version__)
    if "torch" in sys.modules:
        cuda = getattr(sys.modules["torch"].version, "cuda", None)
        if cuda:
            out["cuda"] = cuda
    return out


def command_line(argv: list[str] | None = None) -> str:
    """The exact command, re-runnable from the repository root (`python -m bench.GROUP.NAME ARGS`)."""
    args = sys.argv[1:] if argv is None else argv
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        return shlex.join(["python", "-m", spec.name, *args])
    script = os.path.relpath(sys.argv[0]) if sys.argv and sys.argv[0] else "bench/?.py"
    return shlex.join(["python", script, *args])


def make_result(benchmark: str, metrics: dict[str, Any], device: Any = "cpu", argv: list[str] | None = None,
                extra_versions: tuple[str, ...] = (), **fields: Any) -> dict[str, Any]:
    described = isinstance(device, str) and device.split(":")[0] not in ("cpu", "cuda")  # already a description
    return {"benchmark": benchmark, "device": device if described else device_name(device),
            "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "command": command_line(argv), "versions": versions(*extra_versions), **fields, "metrics": metrics}


def write_result(path: str | Path, result: dict[str, Any], echo: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    if echo:
        print(json.dumps(result["metrics"], indent=2))
        print(f"wrote {path}", file=sys.stderr)
    return path
