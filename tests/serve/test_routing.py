"""Serving a registry alias: hot-swap under load, canary split, rollback, per-version metrics."""

from __future__ import annotations

import json
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fake_engine import FakeEngine

from conftest import API_KEY
from lmsmith.ops import deploy
from lmsmith.serve.routing import Router
from lmsmith.serve.server import BackgroundServer, create_app

AUTH = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def versions(registry, tiny_dir):
    for _ in range(3):
        registry.register(tiny_dir, "tiny")
    deploy.move_alias("tiny@1", "production", registry)
    return registry


@pytest.fixture
def routed_server(versions, tiny_dir):
    """A server following tiny@production with fake engines (loading a version takes 0.3 s)."""
    loaded = []

    def factory(ref: str):
        time.sleep(0.3)
        loaded.append(ref)
        return FakeEngine(tiny_dir, max_num_seqs=8)

    router = Router.for_ref("tiny@production", factory, registry=versions, poll_s=0.05)
    app = create_app(router.initial_engine(), "tiny@production", api_key=API_KEY, version=router.initial_version,
                     router=router, drain_timeout=10)
    with BackgroundServer(app) as srv:
        srv.router, srv.loaded = router, loaded
        yield srv


_local = threading.local()


def _complete(url: str, user: str | None = None, max_tokens: int = 4) -> int:
    body = {"model": "tiny", "prompt": "Hello", "max_tokens": max_tokens, "temperature": 0}
    if user:
        body["user"] = user
    if getattr(_local, "client", None) is None:  # one keep-alive connection per client thread
        _local.client = httpx.Client(timeout=30)
    return _local.client.post(f"{url}/v1/completions", json=body, headers=AUTH).status_code


def _successes(url: str) -> dict[str, float]:
    text = httpx.get(f"{url}/metrics").text
    counts: dict[str, float] = {}
    for m in re.finditer(r'^vllm:request_success_total\{([^}]*)\} (\S+)$', text, re.M):
        version = re.search(r'version="([^"]*)"', m.group(1)).group(1)
        counts[version] = counts.get(version, 0.0) + float(m.group(2))
    return counts


def _wait(cond, timeout: float = 20.0) -> None:
    deadline = time.time() + timeout
    while not cond():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def test_for_ref_only_follows_aliases(versions):
    assert Router.for_ref("tiny@2", lambda r: None, registry=versions) is None
    assert Router.for_ref("tiny", lambda r: None, registry=versions) is None
    assert Router.for_ref("./some/path", lambda r: None, registry=versions) is None
    assert Router.for_ref("tiny@production", lambda r: None, registry=versions).target.stable == 1


def test_alias_hot_swap_under_load_drops_nothing(routed_server, versions):
    url, router = routed_server.url, routed_server.router
    statuses: list[int] = []
    stop = threading.Event()

    def client() -> None:
        for _ in range(400):  # bounded
            if stop.is_set():
                return
            statuses.append(_complete(url, max_tokens=12))

    long: dict = {}

    def long_stream() -> None:  # admitted before the swap, finishes after it: the old version drains it
        body = {"model": "tiny", "prompt": "Hello", "max_tokens": 2000, "ignore_eos": True, "stream": True,
                "stream_options": {"include_usage": True}}
        with httpx.stream("POST", f"{url}/v1/completions", json=body, headers=AUTH, timeout=120) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data: {")]
        long["usage"], long["end"] = json.loads(lines[-1][6:])["usage"], time.time()

    threads = [threading.Thread(target=client) for _ in range(6)] + [threading.Thread(target=long_stream)]
    for t in threads:
        t.start()
    _wait(lambda: len(statuses) >= 20)
    deploy.move_alias("tiny@2", "production", versions)  # what `lmsmith models alias tiny@2 production` does
    _wait(lambda: router.target.stable == 2)
    swapped_at, swap_time = len(statuses), time.time()
    _wait(lambda: len(statuses) >= swapped_at + 30)
    stop.set()
    for t in threads:
        t.join(timeout=120)
    assert statuses and set(statuses) == {200}, f"failed requests during the swap: {[s for s in statuses if s != 200]}"
    assert long["usage"]["completion_tokens"] == 2000 and long["end"] > swap_time  # it ran across the swap
    assert routed_server.loaded == ["tiny@1", "tiny@2"]
    assert set(router.backends) == {2}
    ok = _successes(url)
    assert ok.get("1", 0) > 0 and ok.get("2", 0) > 0
    assert sum(ok.values()) == len(statuses) + 1
    r = httpx.get(f"{url}/v2/models/tiny").json()
    assert r["versions"] == ["2"]


def test_canary_split_and_rollback(routed_server, versions):
    url, router = routed_server.url, routed_server.router
    deploy.canary("tiny@3", weight=10, seed=1234, registry=versions)
    _wait(lambda: router.target.canary == 3 and 3 in router.backends)
    assert httpx.get(f"{url}/v2/models/tiny").json()["versions"] == ["1", "3"]
    with ThreadPoolExecutor(8) as pool:  # 1,000 seeded requests without a user
        statuses = list(pool.map(lambda _: _complete(url, max_tokens=1), range(1000)))
    assert set(statuses) == {200}
    ok = _successes(url)
    share = ok.get("3", 0) / 1000
    assert 0.07 <= share <= 0.13, ok
    # sticky per user: the same user always lands on the same version
    picks = {u: {router.pick(routed_server.app.state.lmsmith, _Body(u)).version for _ in range(3)}
             for u in (f"user-{i}" for i in range(1000))}
    assert all(len(v) == 1 for v in picks.values())
    users_on_canary = sum(v == {"3"} for v in picks.values()) / len(picks)
    assert 0.07 <= users_on_canary <= 0.13
    # the V2 version path pins a version
    body = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hi"]}]}
    r = httpx.post(f"{url}/v2/models/tiny/versions/3/infer", json=body, headers=AUTH)
    assert r.status_code == 200 and r.json()["model_version"] == "3"

    done = deploy.rollback(registry=versions)
    assert done["action"] == "canary off"
    _wait(lambda: router.target.canary is None and set(router.backends) == {1})
    before = _successes(url).get("3", 0)
    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(lambda _: _complete(url, max_tokens=1), range(200)))
    assert set(statuses) == {200}
    assert _successes(url).get("3", 0) == before  # 0% after rollback


def test_rollback_restores_previous_alias_target(versions):
    deploy.move_alias("tiny@2", "production", versions)
    assert versions.get("tiny@production").version == 2
    done = deploy.rollback("tiny", registry=versions)
    assert done == {"model": "tiny", "alias": "production", "action": "alias restored", "from": 2, "to": 1}
    assert versions.get("tiny@production").version == 1
    with pytest.raises(Exception, match="no earlier target"):
        deploy.rollback("tiny", registry=versions)
    with pytest.raises(Exception, match="already is version"):
        deploy.canary("tiny@1", 10, registry=versions)
    with pytest.raises(Exception, match="percentage"):
        deploy.canary("tiny@2", 150, registry=versions)
    d = deploy.canary("tiny@2", 25, registry=versions)
    assert (d.canary, d.weight) == (2, 25.0)
    d = deploy.promote("tiny", registry=versions)
    assert d.canary is None and versions.get("tiny@production").version == 2


class _Body:
    def __init__(self, user):
        self.user = user


def test_request_routed_before_a_swap_is_admitted_after_it(routed_server, versions):
    """Routing happens before tokenization (which may run off the event loop); a version that retires in
    between hands its not-yet-admitted requests to the version serving now, not a 503."""
    import asyncio

    from lmsmith.serve.sampling_params import SamplingParams

    router = routed_server.router
    lease = router.pick(routed_server.app.state.lmsmith).async_engine
    assert lease.backend.version == 1
    deploy.move_alias("tiny@2", "production", versions)
    _wait(lambda: set(router.backends) == {2} and lease.backend.retired and not lease.backend.aeng.accepting)
    new = router.backends[2].aeng
    loop = new._loop

    async def admit():
        handle = await lease.add("late-1", [1, 2, 3], SamplingParams(max_tokens=2))
        outs = [o async for o in handle]
        return handle.owner, outs

    owner, outs = asyncio.run_coroutine_threadsafe(admit(), loop).result(timeout=30)
    assert owner is new and outs[-1].finished
