"""The UI's JSON API without a browser: auth, path safety, arena votes in TRL's preference format."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from lmsmith.ui.app import create_app


def test_ui_api_uses_the_servers_key_and_serves_only_run_files(tmp_path, lmsmith_home):
    c = TestClient(create_app(api_key="s3cret", preferences=tmp_path / "p.jsonl"))
    assert c.get("/ui/models").status_code == 200  # the page holds no data
    assert c.get("/ui/api/models").status_code == 401
    key = {"Authorization": "Bearer s3cret"}
    assert c.get("/ui/api/models", headers=key).json() == []
    run = lmsmith_home / "runs" / "eval-x"
    run.mkdir(parents=True)
    (run / "results.json").write_text(json.dumps({"model": "m", "results": []}))
    (run / "secret.txt").write_text("no")
    assert c.get("/ui/api/runs/eval-x/files/results.json", headers=key).status_code == 200
    assert c.get("/ui/api/runs/eval-x/files/secret.txt", headers=key).status_code == 404
    assert c.get("/ui/api/runs/eval-x/files/..%2F..%2Fregistry", headers=key).status_code == 404
    assert c.get("/ui/static/..%2Fapi.py").status_code == 404
    assert c.get("/ui/nosuchpage").status_code == 404


def test_votes_are_trl_preference_pairs_and_ties_are_not_stored(tmp_path):
    c = TestClient(create_app(preferences=tmp_path / "p.jsonl"))
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    r = c.post("/ui/api/vote", json={"messages": msgs, "answer_a": "5", "answer_b": "4", "model_a": "m@1",
                                     "model_b": "m@2", "winner": "b"}).json()
    assert r["stored"]
    assert c.post("/ui/api/vote", json={"messages": msgs, "answer_a": "x", "answer_b": "y", "model_a": "a",
                                        "model_b": "b", "winner": "tie"}).json() == {"stored": False}
    assert c.post("/ui/api/vote", json={"messages": msgs, "answer_a": "x", "answer_b": "y", "model_a": "a",
                                        "model_b": "b", "winner": "c"}).status_code == 400
    (rec,) = [json.loads(line) for line in (tmp_path / "p.jsonl").read_text().splitlines()]
    assert rec["prompt"] == msgs and rec["chosen"] == [{"role": "assistant", "content": "4"}]
    assert rec["rejected"] == [{"role": "assistant", "content": "5"}] and rec["metadata"]["winner"] == "b"


def test_histogram_quantile_matches_prometheus():
    from lmsmith.ui.api import histogram_quantile

    buckets = [(0.1, 10.0), (0.5, 60.0), (1.0, 100.0), (float("inf"), 100.0)]
    assert histogram_quantile(buckets, 0.5) == 0.1 + 0.4 * (50 - 10) / 50
    assert histogram_quantile(buckets, 0.99) == 0.5 + 0.5 * (99 - 60) / 40
    assert histogram_quantile([], 0.5) is None
