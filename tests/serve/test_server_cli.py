"""`lmsmith serve` as a process: starts, serves the openai client, and on SIGTERM drains then exits 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import httpx
import pytest

from lmsmith.serve.server import free_port


@pytest.mark.slow  # a subprocess that imports torch: ~10 s on 2 cores
@pytest.mark.parametrize("placement", ["--no-engine-process", "--engine-process"])
def test_serve_process_drains_on_sigterm(tiny_dir, lmsmith_home, placement):
    """With the engine in a child process the whole process group gets the signal (as from Ctrl-C or systemd):
    the child keeps stepping until the server has drained."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "lmsmith.cli", "serve", str(tiny_dir), "--port", str(port),
                             "--api-key", "k", "--log-level", "warning", "--max-num-seqs", "4", placement],
                            start_new_session=True,
                            env={**os.environ, "LMSMITH_HOME": str(lmsmith_home)},
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.time() + 120
        while True:
            try:
                if httpx.get(url + "/health").status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() else "timeout"
            time.sleep(0.2)
        from openai import OpenAI

        client = OpenAI(base_url=url + "/v1", api_key="k", max_retries=0)
        out: dict = {"chunks": []}
        started = threading.Event()

        def long_stream() -> None:
            s = client.chat.completions.create(model=str(tiny_dir), messages=[{"role": "user", "content": "Hi"}],
                                               max_tokens=400, stream=True, extra_body={"ignore_eos": True},
                                               stream_options={"include_usage": True})
            for chunk in s:
                out["chunks"].append(chunk)
                if len(out["chunks"]) == 3:
                    started.set()

        t = threading.Thread(target=long_stream)
        t.start()
        assert started.wait(60)
        os.killpg(proc.pid, signal.SIGTERM)  # mid-generation
        t.join(timeout=60)
        assert out["chunks"][-1].usage.completion_tokens == 400  # the in-flight request finished
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
