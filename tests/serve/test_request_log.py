"""The request log: what a served request leaves behind, PII scrubbing, rotation, retention, no blocking."""

from __future__ import annotations

import json
import sqlite3
import time

import httpx
import pytest

from conftest import API_KEY
from lmsmith.errors import LmsmithError
from lmsmith.ops.monitor.logs import load_texts, read_log
from lmsmith.serve.request_log import RequestLog, RequestLogConfig

AUTH = {"Authorization": f"Bearer {API_KEY}"}
PII = "Mail me at jan.novak@example.cz or call +420 601 234 567, my IP is 192.168.10.20."


def test_server_logs_requests_with_pii_scrubbed(make_server, tmp_path, capsys):
    rl = RequestLog(RequestLogConfig(str(tmp_path / "log")))
    srv = make_server(request_log=rl, version="3")
    with httpx.Client(base_url=srv.url, headers=AUTH, timeout=30) as c:
        r = c.post("/v1/chat/completions", json={"model": "tiny", "user": "alice", "max_tokens": 5,
                                                 "messages": [{"role": "user", "content": PII}]})
        assert r.status_code == 200
        r = c.post("/v1/completions", json={"model": "tiny", "prompt": ["Ahoj", "Hello"], "max_tokens": 3})
        assert r.status_code == 200
        body = {"inputs": [{"name": "text_input", "shape": [1], "datatype": "BYTES", "data": ["V2 prompt"]}]}
        assert c.post("/v2/models/tiny/infer", json=body).status_code == 200
        assert c.post("/v1/completions", json={"model": "nope", "prompt": "x"}).status_code == 404
    rl.flush()
    rows = read_log(tmp_path / "log", status=None)
    assert len(rows) == 5
    chat = rows[0]
    assert chat["endpoint"] == "chat" and chat["status"] == 200 and chat["version"] == "3" and chat["served"] == "tiny"
    assert "<EMAIL>" in chat["prompt"] and "<PHONE>" in chat["prompt"] and "<IP>" in chat["prompt"]
    assert "example.cz" not in chat["prompt"] and "601" not in chat["messages"]
    assert chat["pii_scrubbed"] == 6  # in prompt and in messages
    assert chat["user"] and chat["user"] != "alice"  # pseudonymized
    assert chat["completion"] and chat["completion_tokens"] == 5 and chat["prompt_tokens"] > 0
    assert chat["latency_s"] > 0 and chat["ttft_s"] is not None and chat["finish_reason"] == "length"
    assert [r["prompt"] for r in rows[1:3]] == ["Ahoj", "Hello"]  # one row per prompt
    assert rows[3]["prompt"] == "V2 prompt"
    assert rows[4]["status"] == 404 and rows[4]["prompt"] is None
    assert len(read_log(tmp_path / "log")) == 4  # successful ones by default
    assert load_texts(tmp_path / "log", field="completion")
    assert 'lmsmith_request_log_rows_total{outcome="written"} 5.0' in httpx.get(f"{srv.url}/metrics").text
    from lmsmith.cli import main

    assert main(["monitor", "log", str(tmp_path / "log"), "--json"]) == 0
    groups = {g["model"]: g for g in json.loads(capsys.readouterr().out)}
    assert groups["tiny"]["requests"] == 4 and groups["tiny"]["errors"] == 0 and groups["tiny"]["version"] == "3"
    assert groups["tiny"]["completion_tokens"] == sum(r["completion_tokens"] for r in rows[:4])
    assert groups["tiny"]["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows[:4]) and groups["tiny"]["latency_p50_s"] > 0
    assert groups[""]["errors"] == 1 and groups[""]["error_rate"] == 1.0  # the 404 (no model: it was refused)
    assert main(["monitor", "log", str(tmp_path / "log")]) == 0
    assert "request log" in capsys.readouterr().out


def _row(i: int) -> dict:
    return {"ts": time.time(), "request_id": f"r{i}", "endpoint": "chat", "model": "m", "version": "1",
            "status": 200, "prompt": f"prompt {i} " + "x" * 500, "completion": "y" * 500,
            "prompt_tokens": 10, "completion_tokens": 10, "latency_s": 0.1}


def test_rotation_and_size_bound(tmp_path):
    rl = RequestLog(RequestLogConfig(str(tmp_path), max_file_mb=0.05, max_total_mb=0.2, batch=50)).start()
    for i in range(2000):
        while not rl.log(_row(i)):  # the queue may fill: this test wants every row offered
            time.sleep(0.001)
    rl.flush()
    rl.close()
    segs = sorted(tmp_path.glob("requests-*.sqlite"))
    assert rl.rotations >= 5 and rl.deleted >= 1
    assert sum(p.stat().st_size for p in segs) <= 0.2 * 2**20 + 0.06 * 2**20  # bound + one segment's overshoot
    for p in segs:
        assert p.stat().st_size < 0.05 * 2**20 + 60_000  # a segment closes at the first batch past the limit
    rows = read_log(tmp_path)
    ids = [int(r["request_id"][1:]) for r in rows]
    assert ids == sorted(ids) and ids[-1] == 1999  # the newest rows survive, the oldest went first


def test_never_blocks_and_counts_drops(tmp_path):
    rl = RequestLog(RequestLogConfig(str(tmp_path), queue_size=10))  # writer not started: the queue fills
    t = time.perf_counter()
    results = [rl.log(_row(i)) for i in range(1000)]
    assert time.perf_counter() - t < 1.0
    assert sum(results) == 10 and rl.dropped == 990


def test_sampling_and_pii_modes(tmp_path):
    rl = RequestLog(RequestLogConfig(str(tmp_path / "s"), sample=0.1, seed=0)).start()
    kept = sum(rl.log(_row(i)) for i in range(2000))
    assert 150 <= kept <= 250 and rl.sampled_out == 2000 - kept
    rl.close()
    for mode, check in (("drop", lambda r: r["prompt"] is None and r["completion"] is None),
                        ("keep", lambda r: "jan.novak@example.cz" in r["prompt"])):
        rl = RequestLog(RequestLogConfig(str(tmp_path / mode), pii=mode)).start()
        rl.log({**_row(0), "prompt": PII})
        rl.close()
        (row,) = read_log(tmp_path / mode)
        assert check(row) and row["prompt_tokens"] == 10
    with pytest.raises(LmsmithError, match="log-sample"):
        RequestLog(RequestLogConfig(str(tmp_path), sample=1.5))
    with pytest.raises(LmsmithError, match="log-pii"):
        RequestLog(RequestLogConfig(str(tmp_path), pii="mask"))


def test_segments_are_plain_sqlite(tmp_path):
    rl = RequestLog(RequestLogConfig(str(tmp_path))).start()
    rl.log(_row(1))
    rl.close()
    (seg,) = tmp_path.glob("requests-*.sqlite")
    with sqlite3.connect(seg) as con:
        assert con.execute("SELECT count(*), sum(prompt_tokens) FROM requests").fetchone() == (1, 10)
