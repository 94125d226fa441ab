"""Shared fixtures: every test gets its own LMSMITH_HOME; tiny models build in about a second;
the real default model is pulled once per session (slow tests only)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def lmsmith_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "lmsmith-home"
    monkeypatch.setenv("LMSMITH_HOME", str(home))
    return home


@pytest.fixture
def registry(lmsmith_home: Path):
    from lmsmith.registry.registry import Registry

    return Registry(lmsmith_home)


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Llama-architecture model directory (read it, don't modify it)."""
    from lmsmith.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("tiny") / "tiny-llama", "llama")


@pytest.fixture
def tiny_ref(registry, tiny_dir: Path) -> str:
    """The tiny model registered as `tiny` in this test's registry."""
    return registry.register(tiny_dir, "tiny").ref


@pytest.fixture(scope="session")
def default_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SmolLM2-135M-Instruct pulled once per session; use its directory as a model ref (a path).

    The download is cached across sessions in LMSMITH_TEST_CACHE (default: .cache/ in the repo)."""
    from lmsmith.registry.importers import pull_default

    home = tmp_path_factory.mktemp("default-home")
    cache = Path(os.environ.get("LMSMITH_TEST_CACHE", Path(__file__).resolve().parents[1] / ".cache"))
    (home / "cache").mkdir(parents=True)
    cache.mkdir(parents=True, exist_ok=True)
    os.symlink(cache, home / "cache" / "downloads")
    old = os.environ.get("LMSMITH_HOME")
    os.environ["LMSMITH_HOME"] = str(home)
    try:
        mv, _ = pull_default()
    finally:
        if old is None:
            os.environ.pop("LMSMITH_HOME", None)
        else:
            os.environ["LMSMITH_HOME"] = old
    return Path(mv.path)
