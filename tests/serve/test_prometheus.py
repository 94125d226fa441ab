"""vLLM-compatible metrics scraped by a real Prometheus server; the deploy/ files match what we export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from conftest import API_KEY
from lmsmith.serve.server import free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
AUTH = {"Authorization": f"Bearer {API_KEY}"}
VLLM_NAMES = ["vllm:time_to_first_token_seconds_bucket", "vllm:time_per_output_token_seconds_bucket",
              "vllm:inter_token_latency_seconds_bucket", "vllm:e2e_request_latency_seconds_bucket",
              "vllm:request_queue_time_seconds_bucket", "vllm:num_requests_running", "vllm:num_requests_waiting",
              "vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc", "vllm:prompt_tokens_total",
              "vllm:generation_tokens_total", "vllm:request_success_total", "vllm:request_prompt_tokens_bucket",
              "vllm:request_generation_tokens_bucket", "vllm:num_preemptions_total"]


def _traffic(url: str) -> None:
    with httpx.Client(base_url=url, headers=AUTH, timeout=30) as c:
        for i in range(3):
            assert c.post("/v1/chat/completions", json={"model": "tiny", "max_tokens": 6,
                                                        "messages": [{"role": "user", "content": f"Hi {i}"}]}).status_code == 200
        body = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hello"]}],
                "parameters": {"max_tokens": 4}}
        assert c.post("/v2/models/tiny/infer", json=body).status_code == 200


def _metric_names(exprs: list[str]) -> set[str]:
    names = set()
    for e in exprs:
        for m in re.finditer(r"\b((?:vllm:|lmsmith_)[a-z0-9_:]+)", e):
            names.add(m.group(1))
    return names


def test_vllm_metric_names_with_model_and_version_labels(make_server):
    srv = make_server(version="7")
    _traffic(srv.url)
    text = httpx.get(f"{srv.url}/metrics").text
    for name in VLLM_NAMES:
        assert re.search(rf'^{re.escape(name)}\{{[^}}]*model_name="tiny",version="7"', text, re.M), name
    assert re.search(r'^vllm:request_success_total\{finished_reason="length",model_name="tiny",version="7"\} 4.0$|'
                     r'^vllm:request_success_total\{model_name="tiny",version="7",finished_reason="length"\} 4.0$', text, re.M)
    assert re.search(r'^vllm:generation_tokens_total\{model_name="tiny",version="7"\} 22.0$', text, re.M)
    assert 'lmsmith_requests_total{endpoint="/v2/infer",status="200"} 1.0' in text


def test_dashboard_and_alerts_use_exported_metrics(make_server, tmp_path):
    from lmsmith.serve.request_log import RequestLog, RequestLogConfig

    srv = make_server(request_log=RequestLog(RequestLogConfig(str(tmp_path / "log"))))
    _traffic(srv.url)
    exported = {re.sub(r"_(bucket|sum|count)$", "", m) for m in
                re.findall(r"^([a-z0-9_:]+)(?:\{| )", httpx.get(f"{srv.url}/metrics").text, re.M)}
    dash = json.loads((DEPLOY / "grafana" / "lmsmith-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    rules = yaml.safe_load((DEPLOY / "prometheus" / "alerts.yml").read_text())
    exprs += [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used = {re.sub(r"_(bucket|sum|count)$", "", n) for n in _metric_names(exprs)}
    assert used and used <= exported, f"not exported: {used - exported}"
    for f in ("deployment.yaml", "inferenceservice.yaml"):
        docs = list(yaml.safe_load_all((DEPLOY / "kubernetes" / f).read_text()))
        paths = re.findall(r"path: (/v2/health/\w+)", (DEPLOY / "kubernetes" / f).read_text())
        assert docs and {"/v2/health/ready", "/v2/health/live"} <= set(paths)
        for p in paths:
            assert httpx.get(f"{srv.url}{p}").status_code == 200
    assert "/v2/health/ready" in (DEPLOY / "Dockerfile").read_text()


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed (apt-get install prometheus)")
def test_alert_rules_pass_promtool():
    r = subprocess.run(["promtool", "check", "rules", str(DEPLOY / "prometheus" / "alerts.yml")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.skipif(shutil.which("prometheus") is None,
                    reason="the Prometheus server is not installed (Debian: apt-get install prometheus)")
def test_real_prometheus_scrapes_the_server(make_server, tmp_path):
    srv = make_server(version="2")
    _traffic(srv.url)
    port = free_port()
    cfg = {"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
           "rule_files": [str(DEPLOY / "prometheus" / "alerts.yml")],
           "scrape_configs": [{"job_name": "lmsmith", "static_configs": [{"targets": [srv.url.removeprefix("http://")]}]}]}
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(["prometheus", f"--config.file={tmp_path / 'prometheus.yml'}",
                             f"--storage.tsdb.path={tmp_path / 'tsdb'}", f"--web.listen-address=127.0.0.1:{port}"],
                            stdout=log, stderr=subprocess.STDOUT)
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(q: str) -> list[dict]:
        r = httpx.get(f"{api}/query", params={"query": q}, timeout=10)
        r.raise_for_status()
        return r.json()["data"]["result"]

    try:
        deadline = time.time() + 60
        result: list[dict] = []
        while time.time() < deadline:  # bounded: Prometheus starts, scrapes every second
            assert proc.poll() is None, (tmp_path / "prometheus.log").read_text()[-2000:]
            try:
                result = query('vllm:request_success_total{job="lmsmith"}')
            except httpx.HTTPError:
                result = []
            if result:
                break
            time.sleep(0.5)
        assert result, "Prometheus never scraped vllm:request_success_total"
        labels = result[0]["metric"]
        assert labels["model_name"] == "tiny" and labels["version"] == "2"
        assert sum(float(r["value"][1]) for r in query("vllm:request_success_total")) == 4
        assert float(query('up{job="lmsmith"}')[0]["value"][1]) == 1
        assert float(query("sum(vllm:generation_tokens_total)")[0]["value"][1]) > 0
        assert query('lmsmith_requests_total{endpoint="/v2/infer",status="200"}')
        while time.time() < deadline:  # the alert rules load and evaluate without errors
            groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
            rules = [r for g in groups for r in g["rules"]]
            if rules and all(r.get("health") == "ok" for r in rules):
                break
            time.sleep(0.5)
        assert len(rules) == 10 and all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()
