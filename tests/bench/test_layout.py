"""Every benchmark under bench/<stage>/ imports as a module from the repository root (`python -m bench.<stage>.<name>`):
no path setup of its own, no imports of other scripts by file name."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*/*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_benchmark_imports_as_a_module(path: Path):
    source = path.read_text(encoding="utf-8")
    assert "sys.path.insert(0, str(Path(__file__)" not in source, "bench/__init__.py is the one path setup"
    module = importlib.import_module(f"bench.{path.parent.name}.{path.stem}")
    assert module.__file__ and Path(module.__file__).resolve() == path.resolve()
