"""`lmsmith monitor judge`: logged answers graded by the judge, tracked per model version over time."""

from __future__ import annotations

import json
import re
import time

import pytest

from lmsmith.errors import LmsmithError
from lmsmith.ops.monitor.quality import HISTORY, monitor_quality, sample_rows
from lmsmith.serve.request_log import RequestLog, RequestLogConfig


class ScriptedJudge:
    """A judge model stand-in: 5 for an answer that names Prague, 1 otherwise (in the judge's JSON format)."""

    def __init__(self):
        self.prompts: list[str] = []

    def generate(self, prompts, params, progress=None):
        self.prompts += prompts
        outs = []
        for p in prompts:
            answer = re.search(r"\[Response\]\n(.*?)\n\n", p, re.S).group(1)
            outs.append(json.dumps({"reason": "checked", "score": 5 if "Praha" in answer else 1}))
            if progress is not None:
                progress(1)
        return outs


def _log(d, n_per_version=20):
    rl = RequestLog(RequestLogConfig(str(d))).start()
    t0 = time.time() - 100
    for i in range(n_per_version):
        rl.log({"ts": t0 + i, "request_id": f"a{i}", "endpoint": "chat", "status": 200, "version": "1",
                "prompt": "Jaké je hlavní město Česka?", "completion": "Praha."})
        rl.log({"ts": t0 + i + 0.5, "request_id": f"b{i}", "endpoint": "chat", "status": 200, "version": "2",
                "prompt": "Jaké je hlavní město Česka?", "completion": "Nevím."})
    rl.log({"ts": t0, "request_id": "err", "endpoint": "chat", "status": 500})
    rl.close()


def test_scores_per_version_and_history(tmp_path):
    _log(tmp_path)
    judge = ScriptedJudge()
    res = monitor_quality(tmp_path, judge, sample=10, seed=0, judge_name="scripted")
    by_v = {v["version"]: v for v in res["versions"]}
    assert by_v["1"]["mean_score"] == 5 and by_v["2"]["mean_score"] == 1
    assert by_v["1"]["n"] == 5 and by_v["2"]["n"] == 5  # the sample is split evenly over versions
    assert "Jaké je hlavní město Česka?" in judge.prompts[0]
    res2 = monitor_quality(tmp_path, judge, sample=10, seed=1)  # a later run grades other requests
    lines = [json.loads(x) for x in (tmp_path / HISTORY).read_text().splitlines()]
    assert len(lines) == 4 and len(res2["history"]) == 4
    ids = [i for x in lines for i in x["request_ids"]]
    assert len(ids) == len(set(ids)) == 20
    with pytest.raises(LmsmithError, match="no ungraded"):
        for seed in range(10):
            monitor_quality(tmp_path, judge, sample=10, seed=seed)
    assert monitor_quality(tmp_path, judge, sample=4, regrade=True)["versions"]


def test_sample_rows_is_seeded_and_balanced():
    rows = [{"version": "1", "i": i} for i in range(100)] + [{"version": "2", "i": i} for i in range(3)]
    a, b = sample_rows(rows, 10, seed=3), sample_rows(rows, 10, seed=3)
    assert a == b and sum(r["version"] == "2" for r in a) == 3 and sum(r["version"] == "1" for r in a) == 5
