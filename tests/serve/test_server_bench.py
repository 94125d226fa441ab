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
