"""`lmsmith bench serve` against a running server."""

from __future__ import annotations

import json

from conftest import API_KEY


def test_bench_serve_json(server, capsys):
    from lmsmith.cli import main

    rc = main(["bench", "serve", "--url", server.url + "/v1", "--api-key", API_KEY, "--requests", "6",
               "--concurrency", "3", "--prompt-len", "20", "--output-len", "5", "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["completed"], s["errors"], s["output_tokens"]) == (6, 0, 30)
    assert s["output_tok_per_s"] > 0 and s["request_throughput"] > 0
    assert 0 < s["ttft_p50_ms"] <= s["ttft_p99_ms"] and s["tpot_p50_ms"] > 0 and s["itl_p90_ms"] > 0
    assert 15 <= s["prompt_tokens"] / 6 <= 30  # calibrated to about --prompt-len tokens


def test_bench_serve_counts_errors(server):
    from lmsmith.serve.bench import bench_serve

    s = bench_serve(server.url, requests=3, concurrency=2, prompt_len=5, output_len=3, model="no-such-model",
                    api_key=API_KEY, progress=False)
    assert s["completed"] == 0 and s["errors"] == 3 and "404" in s["error_examples"][0]


def test_length_mix_is_seeded_and_long_tailed():
    import pytest

    from lmsmith.errors import LmsmithError
    from lmsmith.serve.bench import request_lengths

    a = request_lengths("sharegpt-mix", 400, 128, 64, seed=1)
    assert a == request_lengths("sharegpt-mix", 400, 128, 64, seed=1)
    assert a != request_lengths("sharegpt-mix", 400, 128, 64, seed=2)
    prompts, outs = sorted(p for p, _ in a), sorted(o for _, o in a)
    assert 100 <= prompts[200] <= 160 and 50 <= outs[200] <= 80  # medians near the arguments
    assert prompts[-1] > 3 * prompts[200] and min(prompts) >= 4  # a long tail, clipped below
    assert request_lengths("fixed", 3, 10, 5, seed=0) == [(10, 5)] * 3
    with pytest.raises(LmsmithError, match="unknown dataset"):
        request_lengths("sharegpt", 3, 10, 5, seed=0)


def test_bench_serve_token_ids_with_length_mix(server):
    from lmsmith.serve.bench import bench_serve, request_lengths

    s = bench_serve(server.url, requests=5, concurrency=5, prompt_len=8, output_len=5, api_key=API_KEY,
                    progress=False, dataset="sharegpt-mix", token_ids=True, token_id_max=400, seed=3)
    lengths = request_lengths("sharegpt-mix", 5, 8, 5, seed=3)
    assert s["errors"] == 0 and s["prompt_tokens"] == sum(p for p, _ in lengths)  # exact: ids, not text
    assert s["output_tokens"] == sum(o for _, o in lengths)
    assert s["config"]["seed"] == 3 and s["config"]["dataset"] == "sharegpt-mix" and s["config"]["mix"]["sigma"]


def test_bench_serve_httpx_fallback(server, monkeypatch):
    import lmsmith.serve.bench as B

    monkeypatch.setattr(B, "USE_AIOHTTP", False)
    s = B.bench_serve(server.url, requests=3, concurrency=3, prompt_len=6, output_len=4, api_key=API_KEY,
                      progress=False, token_ids=True, token_id_max=400)
    assert s["config"]["client"] == "httpx" and (s["completed"], s["output_tokens"], s["prompt_tokens"]) == (3, 12, 18)
    bad = B.bench_serve(server.url, requests=2, concurrency=2, prompt_len=5, output_len=3, model="no-such-model",
                        api_key=API_KEY, progress=False)
    assert bad["errors"] == 2 and "404" in bad["error_examples"][0]


def test_bench_serve_workers_send_the_same_requests(server):
    """Two client processes: every request of the run sent once (same prompts as one process: the seeded lengths),
    the streams split between them; a bad --workers is one clear error."""
    import pytest

    from lmsmith.errors import LmsmithError
    from lmsmith.serve.bench import bench_serve, request_lengths

    kw = dict(requests=7, concurrency=4, prompt_len=8, output_len=4, api_key=API_KEY, progress=False,
              dataset="sharegpt-mix", token_ids=True, token_id_max=400, seed=5)
    s = bench_serve(server.url, workers=2, **kw)
    lengths = request_lengths("sharegpt-mix", 7, 8, 4, seed=5)
    assert s["errors"] == 0 and s["completed"] == 7 and s["config"]["workers"] == 2
    assert s["prompt_tokens"] == sum(p for p, _ in lengths) and s["output_tokens"] == sum(o for _, o in lengths)
    assert 0 < s["ttft_p50_ms"] and s["duration_s"] > 0
    with pytest.raises(LmsmithError, match="--workers"):
        bench_serve(server.url, workers=5, **kw)


def test_the_load_generator_runs_without_its_garbage_collector():
    """A full collection in the client mid-run showed up as a ~200 ms server p99; the state is restored after."""
    import gc

    from lmsmith.serve.bench import no_gc

    assert gc.isenabled()
    with no_gc():
        assert not gc.isenabled()
    assert gc.isenabled()
    gc.disable()
    try:
        with no_gc():
            pass
        assert not gc.isenabled()  # a caller's own choice is kept
    finally:
        gc.enable()
