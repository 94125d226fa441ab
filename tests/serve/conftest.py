"""Tiny models for the engine tests, built once per session."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _threads():
    torch.set_num_threads(1)  # tiny matmuls: threading only adds overhead on a shared 2-core box


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from lmsmith.tiny import build_tiny

    root = tmp_path_factory.mktemp("engine-tiny")
    return {arch: build_tiny(root / arch, arch, seed=i) for i, arch in enumerate(["llama", "qwen2", "mistral", "gemma2"])}


@pytest.fixture(scope="session")
def tiny_engine_kwargs() -> dict:
    return dict(block_size=4, max_num_batched_tokens=64)
