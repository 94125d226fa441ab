"""LLM-as-judge: verdict parsing, position swap, agreement statistics, and the whole judge against a stub
OpenAI-compatible server on a free localhost port."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from lmsmith.errors import LmsmithError
from lmsmith.evaluate import agreement as AG
from lmsmith.evaluate.backends import GenParams, OpenAIBackend
from lmsmith.evaluate.judge import (
    JudgeConfig,
    combine_orders,
    judge,
    parse_category,
    parse_criteria,
    parse_pairwise,
    parse_score,
)


# ----------------------------------------------------------------------------- parsing
@pytest.mark.parametrize("text,expected", [
    ('{"reason": "ok", "score": 4}', 4.0),
    ("Reasoning... Score: 3", 3.0),
    ("**Rating:** 5/5", 5.0),
    ("The answer deserves [[2]].", 2.0),
    ("```json\n{\"score\": 1}\n```", 1.0),
    ("Score: 7", None),            # outside the 1-5 scale
    ('{"score": "great"}', None),  # not a number
    ("I think it is quite good.", None),
    ("", None),
])
def test_parse_score(text, expected):
    assert parse_score(text, (1, 5)) == expected


@pytest.mark.parametrize("text,expected", [
    ('{"verdict": "A"}', "A"), ('{"reason": "x", "verdict": "tie"}', "tie"), ("[[B]]", "B"), ("[[C]]", "tie"),
    ("Verdict: B", "B"), ("Response A is clearly better.", "A"), ("It's a tie.", "tie"), ("B", "B"),
    ('{"verdict": "both are bad'.replace("both are bad", "maybe"), None),  # truncated JSON
    ("Response A is better. No wait, Response B is better.", None),     # contradicts itself
    ("I cannot decide.", None), ("", None),
])
def test_parse_pairwise(text, expected):
    assert parse_pairwise(text) == expected


def test_parse_category_and_criteria():
    cats = ["good", "acceptable", "bad"]
    assert parse_category('{"category": "Good"}', cats) == "good"
    assert parse_category("Category: bad", cats) == "bad"
    assert parse_category("somewhere between good and bad", cats) is None
    crit = parse_criteria('{"score": 4, "criteria": {"fluency": 5, "correctness": 9}}', ["fluency", "correctness"], (1, 5))
    assert crit == {"fluency": 5.0, "correctness": None}


def test_position_swap_logic():
    # the second verdict was given with B shown first, so its "A" means our B
    assert combine_orders("A", "B") == ("A", True)
    assert combine_orders("B", "A") == ("B", True)
    assert combine_orders("tie", "tie") == ("tie", True)
    assert combine_orders("A", "A") == ("tie", False)  # always picks the first slot: position bias -> tie
    assert combine_orders("A", "tie") == ("tie", False)
    assert combine_orders(None, "A") == (None, False)


# ----------------------------------------------------------------------------- agreement
def test_agreement_against_scipy_and_sklearn():
    from scipy.stats import kendalltau, spearmanr
    from sklearn.metrics import cohen_kappa_score

    rng = np.random.default_rng(0)
    human = rng.integers(1, 6, 60)
    judge_scores = np.clip(human + rng.integers(-1, 2, 60), 1, 5)  # ties on both sides
    assert AG.spearman(judge_scores, human) == pytest.approx(spearmanr(judge_scores, human).statistic)
    assert AG.kendall(judge_scores, human) == pytest.approx(kendalltau(judge_scores, human).statistic)
    a = list(rng.choice(["A", "B", "tie"], 50))
    b = [x if rng.random() < 0.7 else "tie" for x in a]
    assert AG.cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert AG.agreement_rate(a, b) == pytest.approx(np.mean([x == y for x, y in zip(a, b)]))
    assert AG.cohen_kappa(["A", "A"], ["A", "A"]) == 1.0


# ----------------------------------------------------------------------------- stub server
class StubJudge(BaseHTTPRequestHandler):
    """Prefers whichever response contains GOOD; scores GOOD 5 and others 2; says nonsense on 'garbage'."""

    def log_message(self, *args):
        pass

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.path.endswith("/chat/completions"):
            prompt = body["messages"][-1]["content"]
            if "garbage" in prompt:
                text = "I refuse to judge this."
            elif "[Response A]" in prompt:
                a = prompt.split("[Response A]")[1].split("[Response B]")[0]
                b = prompt.split("[Response B]")[1]
                text = '{"reason": "r", "verdict": "%s"}' % ("A" if "GOOD" in a else "B" if "GOOD" in b else "tie")
            else:
                resp = prompt.split("[Response]")[1]
                text = "Reasoning first. Score: %d" % (5 if "GOOD" in resp else 2)
            data = {"choices": [{"message": {"role": "assistant", "content": text}}]}
        else:  # plain completions without prompt logprobs, like many hosted APIs
            data = {"choices": [{"text": " Praha", "logprobs": None}]}
        raw = json.dumps(data).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def stub_url():
    server = ThreadingHTTPServer(("127.0.0.1", 0), StubJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def test_pairwise_judge_end_to_end(stub_url, tmp_path, capsys):
    from lmsmith.cli import main

    items = [{"id": i, "prompt": f"q{i}", "response_a": "GOOD answer" if i < 6 else "meh",
              "response_b": "GOOD too" if i >= 8 else "meh"} for i in range(10)]
    items.append({"id": 10, "prompt": "garbage", "response_a": "x", "response_b": "y"})
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    human = [{"id": i, "label": "A" if i < 6 else "B"} for i in range(10)]
    (tmp_path / "human.jsonl").write_text("".join(json.dumps(x) + "\n" for x in human))
    rc = main(["eval", "judge", "--endpoint", stub_url, "--api-model", "stub", "--mode", "pairwise", "--input",
               str(tmp_path / "pairs.jsonl"), "--human", str(tmp_path / "human.jsonl"), "--run-dir", str(tmp_path / "run"), "--json"])
    assert rc == 0
    s = json.loads(capsys.readouterr().out)
    assert (s["a_wins"], s["b_wins"], s["ties"], s["unparseable"]) == (6, 2, 2, 1)
    assert s["unparseable_ids"] == [10]
    assert s["win_rate_a"] == pytest.approx((6 + 0.5 * 2) / 10)
    lo, hi = s["win_rate_a_ci"]
    assert lo < s["win_rate_a"] < hi
    assert s["human_agreement"]["agreement_rate"] == pytest.approx(0.8)
    assert (tmp_path / "run" / "judge.md").exists()


def test_absolute_judge_with_rubric(stub_url, tmp_path):
    items = [{"id": i, "prompt": f"q{i}", "response": "GOOD" if i % 2 else "bad", "reference": "ref"} for i in range(6)]
    cfg = JudgeConfig(mode="absolute", rubric="Be strict.", scale=(1, 5))
    res = judge(items, OpenAIBackend(stub_url, "stub"), cfg)
    assert [r["score"] for r in res["items"]] == [2.0, 5.0, 2.0, 5.0, 2.0, 5.0]
    assert res["summary"]["mean_score"] == pytest.approx(3.5) and res["summary"]["unparseable"] == 0
    human = [2, 5, 2, 4, 1, 5]
    assert AG.spearman([r["score"] for r in res["items"]], human) > 0.8


def test_endpoint_without_logprobs_says_so(stub_url):
    backend = OpenAIBackend(stub_url, "stub", chat=False)
    assert backend.generate(["Hlavní město Česka je"], GenParams(max_tokens=4)) == [" Praha"]
    with pytest.raises(LmsmithError, match="does not return prompt logprobs"):
        backend.loglikelihood([("Hlavní město Česka je", " Praha")])
    assert not backend.supports_loglikelihood


def test_unreachable_endpoint_is_one_line():
    with pytest.raises(LmsmithError, match="cannot reach"):
        OpenAIBackend("http://127.0.0.1:9", "x").generate(["hi"], GenParams(max_tokens=1))


def test_judge_input_missing_field(tmp_path):
    from lmsmith.evaluate.judge import read_items

    (tmp_path / "p.jsonl").write_text(json.dumps({"prompt": "q", "response_a": "x"}) + "\n")
    with pytest.raises(LmsmithError, match=re.escape("p.jsonl:1: missing field 'response_b'")):
        read_items(tmp_path / "p.jsonl", "pairwise")


def test_judging_is_saved_even_when_no_human_label_matches(stub_url, tmp_path, capsys):
    """Minutes of judging are never thrown away: judge.json is written before agreement is computed;
    ids that match no label leave a one-line error naming where the verdicts are."""
    from lmsmith.cli import main

    items = [{"id": i, "prompt": f"q{i}", "response": "GOOD" if i % 2 else "bad"} for i in range(4)]
    (tmp_path / "items.jsonl").write_text("".join(json.dumps(x) + "\n" for x in items))
    (tmp_path / "human.jsonl").write_text("".join(json.dumps({"id": f"other-{i}", "score": 3}) + "\n" for i in range(4)))
    rc = main(["eval", "judge", "--endpoint", stub_url, "--api-model", "stub", "--input", str(tmp_path / "items.jsonl"),
               "--human", str(tmp_path / "human.jsonl"), "--run-dir", str(tmp_path / "run")])
    assert rc == 1
    assert "verdicts saved in" in capsys.readouterr().err
    saved = json.loads((tmp_path / "run" / "judge.json").read_text())
    assert [r["score"] for r in saved["items"]] == [2.0, 5.0, 2.0, 5.0]
    assert saved["human_agreement"]["n"] == 0 and saved["human_agreement"]["labels_without_judged_item"] == 4
    # a label file without ids fails before any judging (no run directory is made)
    (tmp_path / "bad.jsonl").write_text(json.dumps({"score": 3}) + "\n")
    assert main(["eval", "judge", "--endpoint", stub_url, "--api-model", "stub", "--input", str(tmp_path / "items.jsonl"),
                 "--human", str(tmp_path / "bad.jsonl"), "--run-dir", str(tmp_path / "run2")]) == 1
    assert "needs an 'id'" in capsys.readouterr().err and not (tmp_path / "run2").exists()


def test_judge_defaults_score_first_short_budget_and_chat_template():
    from lmsmith.evaluate.judge import absolute_instruction

    cfg = JudgeConfig(mode="absolute")
    assert cfg.tokens == 64 and '{"score"' in absolute_instruction(cfg)
    assert JudgeConfig(mode="pairwise").tokens == 256 and JudgeConfig(criteria=["x"]).tokens == 256
    assert JudgeConfig(max_tokens=10).tokens == 10
    assert parse_score('{"score": 4, "reason": "cut sho') == 4.0  # a verdict cut by the budget still parses


def test_local_judge_uses_its_chat_template_when_it_has_one(tiny_ref, tiny_dir, tmp_path):
    from lmsmith.evaluate.backends import make_backend

    assert make_backend(tiny_ref, chat=None).chat is True
    import shutil

    plain = tmp_path / "plain"
    shutil.copytree(tiny_dir, plain)
    cfg = json.loads((plain / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (plain / "tokenizer_config.json").write_text(json.dumps(cfg))
    for f in plain.glob("*.jinja"):
        f.unlink()
    assert make_backend(str(plain), chat=None).chat is False
