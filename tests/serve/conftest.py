"""Fixtures of the serve tests.

Engine tests: tiny models of each architecture, built once per session. Server tests: the app on an
engine (by default a fast fake with the Engine interface) running in a uvicorn thread on a free port.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from lmsmith.serve.server import BackgroundServer, create_app

sys.path.insert(0, str(Path(__file__).parent))
from fake_engine import FakeEngine  # noqa: E402

API_KEY = "sk-test"
MODEL = "tiny"


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


@pytest.fixture
def make_server(tiny_dir):
    """make_server(engine=None, engine_kwargs={...}, **create_app_kwargs) -> a running BackgroundServer
    (`.url`, `.engine`, `.app`), stopped after the test. Without `engine`, a FakeEngine on the tiny model."""
    started = []

    def make(engine=None, engine_kwargs: dict | None = None, **app_kwargs):
        engine = engine or FakeEngine(tiny_dir, **(engine_kwargs or {}))
        app_kwargs.setdefault("api_key", API_KEY)
        app = create_app(engine, MODEL, **app_kwargs)
        srv = BackgroundServer(app).__enter__()
        srv.engine = engine
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.__exit__(None, None, None)


@pytest.fixture
def server(make_server):
    return make_server()


@pytest.fixture
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=server.url + "/v1", api_key=API_KEY, max_retries=0, timeout=30)
