"""`lmsmith plan cost --metrics-url`: tokens/s measured live from a running server's vLLM counters."""

from __future__ import annotations

import threading

import httpx

from conftest import API_KEY
from lmsmith.ops.cost import scrape_rates


def test_live_rates_from_metrics(make_server):
    srv = make_server()
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
            for _ in range(500):  # bounded
                if stop.is_set():
                    return
                c.post("/v1/completions", json={"model": "tiny", "prompt": "Hello", "max_tokens": 8})

    t = threading.Thread(target=load)
    t.start()
    try:
        rates = scrape_rates(f"{srv.url}/metrics", window=1.5, model="tiny")
    finally:
        stop.set()
        t.join(timeout=60)
    assert rates["output_tok_s"] > 0 and rates["input_tok_s"] > 0
