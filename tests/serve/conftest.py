"""Servers for the server tests: the app on a fake engine (fast) in a uvicorn thread on a free port."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lmsmith.serve.server import BackgroundServer, create_app

sys.path.insert(0, str(Path(__file__).parent))
from fake_engine import FakeEngine  # noqa: E402

API_KEY = "sk-test"
MODEL = "tiny"


@pytest.fixture
def make_server(tiny_dir):
    """make_server(**app_kwargs, engine_kwargs={...}) -> running BackgroundServer (stopped after the test)."""
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
