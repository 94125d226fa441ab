"""`lmsmith bench serve`: a load generator for any OpenAI-compatible server (ours, vLLM, ...).

It sends streaming /v1/completions requests with synthetic prompts and a fixed output length
(`ignore_eos`, so every request generates exactly its output length), `--concurrency` at a time,
optionally arriving as a Poisson process at `--rate` requests/s, and reports request throughput,
output tokens/s, and TTFT / TPOT / ITL percentiles, the way vLLM's benchmark_serving does.

Workloads (`--dataset`): `fixed` (every request `--prompt-len` in, `--output-len` out) or `sharegpt-mix`,
a seeded ShareGPT-like mix of lengths (log-normal prompt and output lengths with the medians
`--prompt-len`/`--output-len`, clipped), so no data set has to be downloaded. Prompts are synthetic
text calibrated to the server's tokenizer, or random token ids (`--token-ids`: exact lengths, any
tokenizer, what a random-init model needs).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import random
import time
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator

import numpy as np

from lmsmith.errors import LmsmithError

PROBE_WORDS = 40
DATASETS = ("fixed", "sharegpt-mix")
# ShareGPT conversations (vLLM's benchmark filter) have long-tailed lengths: roughly log-normal with
# sigma ~1 for prompts and ~0.8 for outputs; the medians are the --prompt-len / --output-len arguments
MIX_SIGMA = {"prompt": 1.0, "output": 0.8}
MIX_CLIP = {"prompt": (4, 1024), "output": (4, 1024)}
TOKEN_ID_RANGE = (100, 32000)
USE_AIOHTTP = True  # False: always httpx (tests of the fallback)  # inside every real vocabulary; clear of the usual special tokens
WORDS = ("praha brno ostrava plzeň warszawa kraków ljubljana maribor river mountain city language model token "
         "train serve data report quality fast slow green blue house bridge castle music").split()


@dataclass
class Result:
    ok: bool
    ttft: float = 0.0
    e2e: float = 0.0
    itl: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = 0
    error: str = ""


def request_lengths(dataset: str, requests: int, prompt_len: int, output_len: int, seed: int
                    ) -> list[tuple[int, int]]:
    """(prompt tokens, output tokens) per request; the same for the same arguments and seed."""
    if dataset not in DATASETS:
        raise LmsmithError(f"unknown dataset {dataset!r}", f"use one of: {', '.join(DATASETS)}")
    if dataset == "fixed":
        return [(prompt_len, output_len)] * requests
    rng = np.random.default_rng(seed)

    def draw(median: int, kind: str) -> np.ndarray:
        lo, hi = MIX_CLIP[kind]
        x = rng.lognormal(np.log(median), MIX_SIGMA[kind], size=requests)
        return np.clip(np.rint(x), lo, hi).astype(int)

    return list(zip(draw(prompt_len, "prompt").tolist(), draw(output_len, "output").tolist()))


def token_id_prompt(n: int, rng: random.Random, high: int = TOKEN_ID_RANGE[1]) -> list[int]:
    low = min(TOKEN_ID_RANGE[0], high // 4)
    return [rng.randrange(low, high) for _ in range(n)]


def synthetic_prompt(n_words: int, rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n_words))  # the word mix keeps tokens per word steady


class HTTP:
    """The load generator's HTTP client: aiohttp when installed, else httpx.

    httpx's pool issues a burst of concurrent streaming requests slowly (32 requests spread over ~0.8 s on a
    busy 2-core machine, against ~30 ms for aiohttp), which would land in the measured TTFT, so aiohttp
    (what vLLM's benchmark uses) is preferred."""

    def __init__(self, concurrency: int):
        self.concurrency = concurrency
        try:
            import aiohttp
        except ImportError:
            aiohttp = None
        if not USE_AIOHTTP:
            aiohttp = None
        self.aiohttp = aiohttp
        self.name = "aiohttp" if aiohttp else "httpx"

    async def __aenter__(self) -> "HTTP":
        if self.aiohttp:
            a = self.aiohttp
            self.session = a.ClientSession(connector=a.TCPConnector(limit=self.concurrency + 4),
                                           timeout=a.ClientTimeout(total=600, sock_connect=10))
            self.errors: tuple = (a.ClientError, OSError, asyncio.TimeoutError)
        else:
            import httpx

            self.session = httpx.AsyncClient(timeout=httpx.Timeout(600.0, connect=10.0),
                                             limits=httpx.Limits(max_connections=self.concurrency + 4))
            self.errors = (httpx.HTTPError, OSError)
        return self

    async def __aexit__(self, *exc) -> None:
        if self.aiohttp:
            await self.session.close()
        else:
            await self.session.aclose()

    async def request_json(self, method: str, url: str, headers: dict, body: dict | None = None) -> tuple[int, Any]:
        """(status, parsed JSON or None)."""
        if self.aiohttp:
            async with self.session.request(method, url, json=body, headers=headers) as r:
                text = await r.text()
                status = r.status
        else:
            r = await self.session.request(method, url, json=body, headers=headers)
            text, status = r.text, r.status_code
        try:
            return status, json.loads(text)
        except ValueError:
            return status, None

    async def stream_lines(self, url: str, headers: dict, body: dict, on_status) -> AsyncIterator[str]:
        """POST and yield the response's lines; `on_status(status, read_body)` may stop early by returning text."""
        if self.aiohttp:
            async with self.session.post(url, json=body, headers=headers) as r:
                if r.status != 200:
                    on_status(r.status, (await r.read()).decode(errors="replace"))
                    return
                async for raw in r.content:
                    yield raw.decode().rstrip("\r\n")
        else:
            async with self.session.stream("POST", url, json=body, headers=headers) as r:
                if r.status_code != 200:
                    on_status(r.status_code, (await r.aread()).decode(errors="replace"))
                    return
                async for line in r.aiter_lines():
                    yield line


async def one_request(http: HTTP, url: str, headers: dict, body: dict) -> Result:
    t0 = time.perf_counter()
    last = None
    res = Result(ok=False)

    def bad_status(status: int, text: str) -> None:
        res.error = f"HTTP {status}: {text[:200]}"

    try:
        async with contextlib.aclosing(http.stream_lines(url, headers, body, bad_status)) as lines:
            async for line in lines:
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                data = json.loads(line[6:])
                if "error" in data:
                    res.error = data["error"].get("message", "error")
                    return res
                if data.get("usage"):
                    res.output_tokens = data["usage"]["completion_tokens"]
                    res.prompt_tokens = data["usage"]["prompt_tokens"]
                if data.get("choices") and data["choices"][0].get("text"):
                    now = time.perf_counter()
                    if last is None:
                        res.ttft = now - t0
                    else:
                        res.itl.append(now - last)
                    last = now
    except http.errors as e:
        res.error = f"{type(e).__name__}: {e}"
        return res
    if res.error:
        return res
    res.e2e = time.perf_counter() - t0
    res.ok = last is not None
    if not res.ok:
        res.error = "no tokens received"
    return res


async def calibrate_words(http: HTTP, base: str, headers: dict, model: str, prompt_len: int, rng: random.Random) -> int:
    """Words per prompt so that prompts are about `prompt_len` tokens in the server's tokenizer."""
    probe = synthetic_prompt(PROBE_WORDS, random.Random(rng.random()))
    try:
        status, data = await http.request_json("POST", base + "/v1/completions", headers,
                                               {"model": model, "prompt": probe, "max_tokens": 1})
        tokens = data["usage"]["prompt_tokens"] if status == 200 else None
    except (*http.errors, KeyError, TypeError):
        tokens = None
    per_word = tokens / PROBE_WORDS if tokens else 1.0
    return max(1, round(prompt_len / per_word))


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The load generator's garbage collector off for the run (as timeit does): its heap grows with every result
    and run, and a full collection mid-run (~200 ms on a 2-core machine after a few runs in one process) landed in
    the measured TTFT as a p99 that belonged to the client, not the server."""
    gc.collect()
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


async def run_load(url: str, model: str | None, requests: int, concurrency: int, rate: float | None,
                   prompt_len: int, output_len: int, api_key: str | None, seed: int = 0,
                   on_done=None, dataset: str = "fixed", token_ids: bool = False,
                   token_id_max: int = TOKEN_ID_RANGE[1], share: tuple[int, int] = (0, 1), ready=None) \
        -> tuple[list[Result], float]:
    """Returns the results and the run's duration. `share=(w, workers)`: this process sends requests w, w + workers,
    ... of the run (the same seed, hence the same prompts, in every worker) at its part of the concurrency and rate;
    `ready()` is called once its prompts are built, right before the first request (the workers' common start)."""
    base = url.rstrip("/")
    base = base[:-3] if base.endswith("/v1") else base
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    rng = random.Random(seed)
    async with HTTP(concurrency) as client:
        if model is None:
            try:
                status, data = await client.request_json("GET", base + "/v1/models", headers)
                if status != 200:
                    raise ValueError(f"HTTP {status}")
                model = data["data"][0]["id"]
            except (*client.errors, KeyError, IndexError, TypeError, ValueError) as e:
                raise LmsmithError(f"cannot list models at {base}/v1/models: {e}",
                                   "is the server running? pass --model NAME if it has no /v1/models") from None
        lengths = request_lengths(dataset, requests, prompt_len, output_len, seed)
        if token_ids:
            prompts: list = [token_id_prompt(n, rng, token_id_max) for n, _ in lengths]
        else:
            words = await calibrate_words(client, base, headers, model, prompt_len, rng)
            prompts = [synthetic_prompt(max(1, round(words * n / prompt_len)), rng) for n, _ in lengths]
        w, workers = share
        mine = list(range(w, requests, workers))
        concurrency = concurrency // workers + (w < concurrency % workers)
        rate = rate / workers if rate else rate
        sem = asyncio.Semaphore(max(1, concurrency))

        async def task(i: int, prompt: str | list[int]) -> Result:
            async with sem:
                body = {"model": model, "prompt": prompt, "max_tokens": lengths[i][1], "temperature": 0.0,
                        "stream": True, "stream_options": {"include_usage": True}, "ignore_eos": True}
                res = await one_request(client, base + "/v1/completions", headers, body)
            if on_done:
                on_done()
            return res

        if ready is not None:
            ready()
        t0 = time.perf_counter()
        tasks = []
        for k, i in enumerate(mine):
            tasks.append(asyncio.create_task(task(i, prompts[i])))
            if rate and k < len(mine) - 1:
                await asyncio.sleep(rng.expovariate(rate))
        results = await asyncio.gather(*tasks)
        return list(results), time.perf_counter() - t0


def summarize(results: list[Result], duration: float) -> dict:
    ok = [r for r in results if r.ok]
    out = sum(r.output_tokens for r in ok)

    def pct(xs: list[float], name: str) -> dict:
        if not xs:
            return {f"{name}_{k}_ms": None for k in ("mean", "p50", "p90", "p99")}
        a = np.asarray(xs) * 1000
        return {f"{name}_mean_ms": float(a.mean()), f"{name}_p50_ms": float(np.percentile(a, 50)),
                f"{name}_p90_ms": float(np.percentile(a, 90)), f"{name}_p99_ms": float(np.percentile(a, 99))}

    tpot = [(r.e2e - r.ttft) / (r.output_tokens - 1) for r in ok if r.output_tokens > 1]
    summary = {
        "requests": len(results), "completed": len(ok), "errors": len(results) - len(ok),
        "duration_s": duration, "request_throughput": len(ok) / duration if duration else 0.0,
        "output_tokens": out, "output_tok_per_s": out / duration if duration else 0.0,
        "prompt_tokens": sum(r.prompt_tokens for r in ok),
    }
    summary |= pct([r.ttft for r in ok], "ttft") | pct(tpot, "tpot") | pct([x for r in ok for x in r.itl], "itl")
    summary |= pct([r.e2e for r in ok], "e2e")
    errors = sorted({r.error for r in results if not r.ok})
    if errors:
        summary["error_examples"] = errors[:5]
    return summary


def _worker(kw: dict, barrier, out) -> None:
    """One load-generator process: its share of the requests, started with the others (a barrier), then
    (results, wall-clock start, end) or the error's text into `out`."""
    _fast_event_loop()
    clock = {}

    def ready() -> None:
        barrier.wait(timeout=120)
        clock["start"] = time.time()
    try:
        with no_gc():
            results, duration = asyncio.run(run_load(**kw, ready=ready))
        out.put((kw["share"][0], results, clock["start"], clock["start"] + duration))
    except BaseException as e:  # noqa: BLE001 - reported by the parent as one clear error
        barrier.abort()
        out.put((kw["share"][0], f"{type(e).__name__}: {e}", 0.0, 0.0))


def _run_workers(workers: int, kw: dict) -> tuple[list[Result], float]:
    import multiprocessing
    import queue

    ctx = multiprocessing.get_context("spawn")  # the caller may run threads: no fork
    barrier, out = ctx.Barrier(workers), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(kw | {"share": (w, workers)}, barrier, out), daemon=True)
             for w in range(workers)]
    for p in procs:
        p.start()
    parts = []
    try:
        while len(parts) < workers:
            try:
                parts.append(out.get(timeout=5))
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise LmsmithError("the load generator's worker processes died", "run with --workers 1") from None
    finally:
        for p in procs:
            p.join(timeout=10)
    errors = [r for _, r, _, _ in parts if isinstance(r, str)]
    if errors:
        raise LmsmithError(f"a load-generator worker failed: {errors[0]}", "run with --workers 1 to see it in place")
    results = [r for _, part, _, _ in sorted(parts, key=lambda x: x[0]) for r in part]
    return results, max(end for *_, end in parts) - min(start for _, _, start, _ in parts)


def _fast_event_loop() -> None:
    """uvloop when installed: the client's own event loop, parsing ~20k SSE chunks a second at 32 streams, should
    not be what the measured TTFT waits for."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


def bench_serve(url: str, requests: int = 64, concurrency: int = 8, rate: float | None = None,
                prompt_len: int = 128, output_len: int = 64, model: str | None = None, api_key: str | None = None,
                seed: int = 0, progress: bool = True, dataset: str = "fixed", token_ids: bool = False,
                token_id_max: int = TOKEN_ID_RANGE[1], workers: int = 1) -> dict:
    """Run the load and return the summary (see `summarize`). `workers` > 1 spreads the streams over that many
    client processes (each its own event loop), so a client saturated by parsing streamed chunks does not inflate
    the server's measured TTFT and TPOT; the requests and prompts are the same as with one."""
    if dataset not in DATASETS:
        raise LmsmithError(f"unknown --dataset {dataset!r}", f"use one of: {', '.join(DATASETS)}")
    if token_ids and token_id_max < 2:
        raise LmsmithError(f"--token-id-max must be at least 2, got {token_id_max}", "pass the model's vocabulary size")
    for name, v in (("--requests", requests), ("--concurrency", concurrency), ("--prompt-len", prompt_len),
                    ("--output-len", output_len)):
        if v < 1:
            raise LmsmithError(f"{name} must be at least 1, got {v}")
    if rate is not None and rate <= 0:
        raise LmsmithError(f"--rate must be > 0 requests/s, got {rate}", "omit it to send as fast as --concurrency allows")
    if workers < 1 or workers > concurrency:
        raise LmsmithError(f"--workers must be between 1 and --concurrency ({concurrency}), got {workers}",
                           "each client process needs at least one stream")
    from lmsmith.progress import task

    if workers > 1:
        kw = dict(url=url, model=model, requests=requests, concurrency=concurrency, rate=rate, prompt_len=prompt_len,
                  output_len=output_len, api_key=api_key, seed=seed, dataset=dataset, token_ids=token_ids,
                  token_id_max=token_id_max)
        if progress:
            with task(f"{requests} requests, concurrency {concurrency}, {workers} client processes", None):
                results, duration = _run_workers(workers, kw)
        else:
            results, duration = _run_workers(workers, kw)
    elif progress:
        with task(f"{requests} requests, concurrency {concurrency}", total=requests) as bar, no_gc():
            results, duration = asyncio.run(run_load(url, model, requests, concurrency, rate, prompt_len, output_len,
                                                     api_key, seed, on_done=lambda: bar(1), dataset=dataset,
                                                     token_ids=token_ids, token_id_max=token_id_max))
    else:
        with no_gc():
            results, duration = asyncio.run(run_load(url, model, requests, concurrency, rate, prompt_len, output_len,
                                                     api_key, seed, dataset=dataset, token_ids=token_ids,
                                                     token_id_max=token_id_max))
    summary = summarize(results, duration)
    summary["config"] = dict(url=url, requests=requests, concurrency=concurrency, rate=rate, prompt_len=prompt_len,
                             output_len=output_len, dataset=dataset, seed=seed, token_ids=token_ids,
                             client=HTTP(concurrency).name, workers=workers)
    if dataset == "sharegpt-mix":
        summary["config"]["mix"] = {"distribution": "log-normal", "sigma": MIX_SIGMA, "clip": MIX_CLIP,
                                    "median": {"prompt": prompt_len, "output": output_len}}
    return summary


def print_summary(s: dict) -> None:
    from rich.table import Table

    from lmsmith.progress import out

    t = Table(title=f"{s['completed']}/{s['requests']} requests in {s['duration_s']:.2f} s ({s['errors']} errors)")
    t.add_column("metric")
    for col in ("mean", "p50", "p90", "p99"):
        t.add_column(col, justify="right")
    for name in ("ttft", "tpot", "itl", "e2e"):
        t.add_row(f"{name.upper()} (ms)", *[("-" if s[f"{name}_{c}_ms"] is None else f"{s[f'{name}_{c}_ms']:.1f}")
                                              for c in ("mean", "p50", "p90", "p99")])
    out.print(t)
    out.print(f"request throughput {s['request_throughput']:.2f} req/s, output {s['output_tok_per_s']:.1f} tok/s, "
              f"{s['output_tokens']} output tokens")
    for e in s.get("error_examples", []):
        out.print(f"[red]error:[/] {e}")


