"""`lmsmith serve NAME@production --log-requests DIR` as a process on the real engine: alias moves and
rollbacks from the command line switch the served version; the request log records each version."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import httpx
import pytest

from lmsmith.cli import main
from lmsmith.ops.monitor.logs import read_log
from lmsmith.serve.server import free_port


def _wait(cond, proc, timeout=120):
    deadline = time.time() + timeout
    while True:
        try:
            if cond():
                return
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() < deadline, "timed out"
        time.sleep(0.2)


@pytest.mark.slow  # a subprocess that imports torch and loads two engines: ~20 s on 2 cores
def test_serve_alias_follows_moves_and_rollback(tiny_dir, lmsmith_home, tmp_path, capsys):
    for _ in range(2):
        assert main(["models", "import", str(tiny_dir), "--name", "tiny"]) == 0
    assert main(["models", "alias", "tiny@1", "production"]) == 0
    port = free_port()
    log_dir = tmp_path / "log"
    proc = subprocess.Popen([sys.executable, "-m", "lmsmith.cli", "serve", "tiny@production", "--port", str(port),
                             "--log-level", "warning", "--max-num-seqs", "4", "--log-requests", str(log_dir),
                             "--served-model-name", "tiny"],
                            env={**os.environ, "LMSMITH_HOME": str(lmsmith_home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    body = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["Hello"]}],
            "parameters": {"max_tokens": 4}}
    try:
        _wait(lambda: httpx.get(url + "/v2/health/ready").status_code == 200, proc)
        r = httpx.post(f"{url}/v2/models/tiny/infer", json=body, timeout=60)
        assert r.status_code == 200 and r.json()["model_version"] == "1"
        assert main(["models", "alias", "tiny@2", "production"]) == 0
        _wait(lambda: httpx.get(f"{url}/v2/models/tiny").json()["versions"] == ["2"], proc)
        r = httpx.post(f"{url}/v2/models/tiny/infer", json=body, timeout=60)
        assert r.json()["model_version"] == "2"
        assert main(["deploy", "rollback"]) == 0
        assert "tiny@production -> version 1 (was 2)" in capsys.readouterr().out
        _wait(lambda: httpx.get(f"{url}/v2/models/tiny").json()["versions"] == ["1"], proc)
        assert httpx.post(f"{url}/v2/models/tiny/infer", json=body, timeout=60).json()["model_version"] == "1"
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    assert [r["version"] for r in read_log(log_dir)] == ["1", "2", "1"]
