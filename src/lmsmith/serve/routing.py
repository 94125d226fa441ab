"""Serving a registry alias: hot-swap when the alias moves, canary traffic splits, per-version engines.

`lmsmith serve NAME@production` builds a Router. It polls the registry (the alias file and the deployment
file `registry/models/NAME/deploy.json`, which `lmsmith deploy` writes) and, when the target changes, loads
the new version in a worker thread while the old one keeps serving, then swaps: new requests go to the new
engine at once, and the old engine keeps running until its in-flight requests finish (drain), then stops.
No request is refused or cut during a swap. A canary (`lmsmith deploy canary NAME@4 --weight 10`) runs two
engines; each request goes to the canary with probability weight/100, decided by a seeded generator, or by a
hash of the request's `user` field when it has one (sticky: a user stays on one version). Every request is
observed under its version's labels, so the two versions' latency and finish reasons can be compared.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import logging
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from pydantic import BaseModel, Field

from lmsmith.errors import LmsmithError
from lmsmith.registry.registry import Registry, looks_like_path, parse_ref
from lmsmith.serve.async_engine import AsyncEngine
from lmsmith.serve.engine_process import make_async_engine

log = logging.getLogger("lmsmith.serve")
DEPLOY_FILE = "deploy.json"


class AliasMove(BaseModel):
    alias: str
    previous: int | None  # the version the alias pointed at before (None: it did not exist)
    version: int
    ts: float = Field(default_factory=time.time)


class DeployState(BaseModel):
    """What `lmsmith deploy` wrote for one model: the canary of one alias, and the alias history."""

    alias: str = "production"
    canary: int | None = None
    weight: float = 0.0  # percent of traffic to the canary
    seed: int = 0
    history: list[AliasMove] = Field(default_factory=list)


def deploy_path(registry: Registry, name: str) -> Path:
    return registry.models_dir / name / DEPLOY_FILE


def read_deploy(registry: Registry, name: str) -> DeployState:
    p = deploy_path(registry, name)
    if not p.exists():
        return DeployState()
    try:
        return DeployState.model_validate_json(p.read_text())
    except (OSError, ValueError) as e:
        raise LmsmithError(f"the deployment file {p} is unreadable: {e}", "fix or delete it") from None


def write_deploy(registry: Registry, name: str, state: DeployState) -> None:
    p = deploy_path(registry, name)
    tmp = p.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(state.model_dump_json(indent=2))
    os.replace(tmp, p)  # atomic: a polling server never reads half a file


def canary_share(seed: int, user: str) -> float:
    """A user's fixed point in [0, 1): below weight/100 means the canary."""
    h = hashlib.sha256(f"{seed}:{user}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64


@dataclass
class Target:
    stable: int
    canary: int | None
    weight: float
    seed: int


@dataclass
class Backend:
    version: int
    engine: Any
    aeng: AsyncEngine
    metrics: Any
    retired: bool = False


class Lease:
    """The async engine a request was routed to. If that version retires between routing and admission (a
    swap while the prompt was being tokenized off the event loop), the request is admitted to the version
    serving now instead of being refused: the check and the admission happen without yielding the loop."""

    def __init__(self, router: "Router", backend: Backend):
        self.router, self.backend = router, backend

    async def add(self, request_id: str, prompt: Any, params: Any) -> Any:
        b = self.backend
        if b.retired:
            b = self.router.backends.get(self.router.target.stable, b)
        return await b.aeng.add(request_id, prompt, params)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.backend.aeng, name)


class Router:
    def __init__(self, name: str, alias: str, factory: Callable[[str], Any], registry: Registry | None = None,
                 poll_s: float = 1.0):
        self.name, self.alias, self.factory = name, alias, factory
        self.registry = registry or Registry()
        self.poll_s = poll_s
        self.backends: dict[int, Backend] = {}
        self.target = self.read_target()
        self.rng = random.Random(self.target.seed)
        self.preloaded: dict[int, Any] = {}
        self.state: Any = None
        self.task: asyncio.Task | None = None
        self.swaps = 0
        self.error: str | None = None

    @classmethod
    def for_ref(cls, ref: str, factory: Callable[[str], Any], **kw: Any) -> "Router | None":
        """A router when `ref` is a registry alias (NAME@production); None for paths and fixed versions."""
        if looks_like_path(ref) and not ("@" in ref and "/" not in ref):
            return None
        name, sel = parse_ref(ref)
        if sel is None or sel.isdigit() or sel == "latest":
            return None
        return cls(name, sel, factory, **kw)

    # ------------------------------------------------------------------ what should be served
    def read_target(self) -> Target:
        stable = self.registry.get(f"{self.name}@{self.alias}").version
        d = read_deploy(self.registry, self.name)
        if d.alias != self.alias or d.canary is None or d.weight <= 0 or d.canary == stable:
            return Target(stable, None, 0.0, d.seed)
        return Target(stable, d.canary, d.weight, d.seed)

    def versions(self) -> list[str]:
        t = self.target
        return [str(t.stable)] + ([str(t.canary)] if t.canary is not None else [])

    def load(self, version: int) -> Any:
        return self.factory(f"{self.name}@{version}")

    def initial_engine(self) -> Any:
        """Load what the alias (and a canary) point at now; the stable engine goes to create_app."""
        t = self.target
        if t.canary is not None:
            self.preloaded[t.canary] = self.load(t.canary)
        return self.load(t.stable)

    @property
    def initial_version(self) -> str:
        return str(self.target.stable)

    # ------------------------------------------------------------------ serving
    def _new_aeng(self, engine: Any, like: AsyncEngine) -> AsyncEngine:
        """An AsyncEngine for another version, with the same admission limits as the server's."""
        seqs = int(getattr(like.engine, "max_num_seqs", None) or 64)
        aeng = make_async_engine(engine, max_num_seqs=seqs, max_queue=max(0, like.capacity - seqs),
                           request_timeout=like.request_timeout)
        aeng.stream_interval = like.stream_interval
        aeng.start()
        return aeng

    def _backend(self, version: int, engine: Any, aeng: AsyncEngine) -> Backend:
        return Backend(version, engine, aeng, self.state.metrics.bind(self.state.model_name, str(version)))

    async def start(self, state: Any, aeng: AsyncEngine, drain_timeout: float = 30.0) -> None:
        self.state, self.drain_timeout = state, drain_timeout
        self.backends[self.target.stable] = self._backend(self.target.stable, state.engine, aeng)
        for v, eng in self.preloaded.items():
            self.backends[v] = self._backend(v, eng, self._new_aeng(eng, aeng))
        self.preloaded.clear()
        state.metrics.sources = self.sources
        self.task = asyncio.ensure_future(self._watch())

    def sources(self) -> list[tuple[tuple[str, str], dict]]:
        return [((self.state.model_name, str(v)), b.aeng.stats()) for v, b in list(self.backends.items())]

    def pick(self, state: Any, body: Any = None, version: str | None = None) -> Any:
        t = self.target
        v = t.stable
        if version is not None and version.isdigit() and int(version) in self.backends:
            v = int(version)
        elif t.canary is not None and t.canary in self.backends:
            user = getattr(body, "user", None)
            u = canary_share(t.seed, user) if user else self.rng.random()
            if u < t.weight / 100.0:
                v = t.canary
        b = self.backends.get(v) or self.backends[t.stable]
        return dataclasses.replace(state, engine=b.engine, async_engine=Lease(self, b), metrics=b.metrics,
                                   version=str(b.version), router=None)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.poll_s)
            try:
                t = self.read_target()
            except LmsmithError as e:  # the alias was deleted or the file is broken: keep serving what we have
                if self.error != str(e):
                    log.warning("not following %s@%s: %s", self.name, self.alias, e)
                self.error = str(e)
                continue
            self.error = None
            if t != self.target:
                try:
                    await self.apply(t)
                except Exception as e:  # a version that fails to load must not take the server down
                    log.exception("could not switch to %s", t)
                    self.error = f"{type(e).__name__}: {e}"
                    await asyncio.sleep(self.poll_s * 5)

    async def apply(self, t: Target) -> None:
        """Load what is missing (in a thread, the old engines keep serving), swap, then drain the rest."""
        want = {t.stable} | ({t.canary} if t.canary is not None else set())
        like = self.backends[self.target.stable].aeng
        new = dict(self.backends)
        for v in sorted(want - set(self.backends)):
            eng = await asyncio.to_thread(self.load, v)
            new[v] = self._backend(v, eng, self._new_aeng(eng, like))
        old = [b for v, b in new.items() if v not in want]
        self.backends = {v: b for v, b in new.items() if v in want}
        self.target, self.rng = t, random.Random(t.seed)
        stable = self.backends[t.stable]
        self.state.engine, self.state.async_engine, self.state.version = stable.engine, stable.aeng, str(t.stable)
        self.swaps += 1
        log.info("now serving %s@%s -> %s%s", self.name, self.alias, t.stable,
                 f" (canary {t.canary} at {t.weight:g}%)" if t.canary is not None else "")
        for b in old:  # nothing new reaches them now; requests already admitted finish on them
            await self._retire(b)

    async def _retire(self, b: Backend) -> None:
        b.retired = True  # requests routed here but not yet admitted go to the new version
        deadline = time.monotonic() + self.drain_timeout
        while b.aeng.in_flight and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        await b.aeng.drain(0)
        await asyncio.to_thread(b.aeng.stop)

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        primary = self.state.async_engine if self.state is not None else None
        for b in list(self.backends.values()):
            if b.aeng is not primary:  # the server's lifespan drains the primary
                await b.aeng.drain(self.drain_timeout)
                b.aeng.stop()

    def status(self) -> dict[str, Any]:
        t = self.target
        return {"name": self.name, "alias": self.alias, "stable": t.stable, "canary": t.canary,
                "weight": t.weight, "swaps": self.swaps, "error": self.error}
