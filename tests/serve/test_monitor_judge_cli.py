"""`lmsmith monitor judge --log DIR --endpoint URL --api-model NAME`: the CLI end to end, a server as the judge."""

from __future__ import annotations

import json

import httpx

from conftest import API_KEY
from lmsmith.cli import main
from lmsmith.serve.request_log import RequestLog, RequestLogConfig


def test_monitor_judge_cli(make_server, tmp_path, capsys):
    rl = RequestLog(RequestLogConfig(str(tmp_path / "log")))
    srv = make_server(request_log=rl, version="4")
    with httpx.Client(base_url=srv.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as c:
        for q in ("Hello?", "Ahoj?", "Cześć?"):
            c.post("/v1/chat/completions", json={"model": "tiny", "messages": [{"role": "user", "content": q}]})
    rl.flush()
    code = main(["monitor", "judge", "--log", str(tmp_path / "log"), "--endpoint", srv.url + "/v1", "--api-model", "tiny",
                 "--api-key", API_KEY, "--sample", "2", "--json"])
    assert code == 0
    res = json.loads(capsys.readouterr().out)
    (v,) = res["versions"]
    assert v["version"] == "4" and v["n"] == 2
    # the fake engine answers prose, not the judge's JSON: counted as unparseable, never dropped
    assert res["summary"]["unparseable"] == 2 and v["mean_score"] is None
    assert main(["monitor", "judge", "--log", str(tmp_path / "log"), "--endpoint", srv.url + "/v1",
                 "--api-model", "tiny", "--api-key", API_KEY, "--sample", "5"]) == 0
    assert "quality of" in capsys.readouterr().out
