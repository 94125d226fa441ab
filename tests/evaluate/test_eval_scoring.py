"""Log-likelihood against a hand computation, multiple-choice aggregation, generation metrics, statistics."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lmsmith.evaluate import metrics as M
from lmsmith.evaluate.backends import GenParams, HFBackend, ModelInfo
from lmsmith.evaluate.runner import run_task
from lmsmith.evaluate.tasks import load_task


@pytest.fixture
def backend(tiny_ref):
    return HFBackend(tiny_ref, dtype="float32", device="cpu", batch_size=3)


def hand_loglikelihood(model, ctx_ids: list[int], cont_ids: list[int]) -> float:
    ids = torch.tensor([ctx_ids + cont_ids])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
    return sum(logp[len(ctx_ids) - 1 + i, t].item() for i, t in enumerate(cont_ids))


def test_loglikelihood_matches_hand_computation(backend):
    tok = backend.tok
    context, continuation = "Otázka: Jaké je hlavní město Česka?\nOdpověď:", " Praha"
    whole = tok.encode(context + continuation, add_special_tokens=False)
    ctx = tok.encode(context, add_special_tokens=False)
    expected = hand_loglikelihood(backend.model, ctx, whole[len(ctx):])
    requests = [(context, continuation), ("Krátký kontext", " a pokračování"), (context, " Brno")]
    (got, greedy), *_ = backend.loglikelihood(requests)
    assert got == pytest.approx(expected, abs=1e-4)
    assert isinstance(greedy, bool)
    # batching and padding must not change any score
    singles = [backend.loglikelihood([r])[0][0] for r in requests]
    assert [x for x, _ in backend.loglikelihood(requests)] == pytest.approx(singles, abs=1e-4)


def test_trailing_context_space_moves_to_continuation(backend):
    a = backend.loglikelihood([("Odpověď: ", "Praha")])[0][0]
    b = backend.loglikelihood([("Odpověď:", " Praha")])[0][0]
    assert a == pytest.approx(b, abs=1e-6)


def test_empty_context_uses_prefix_token(backend):
    cont = backend.tok.encode("Praha", add_special_tokens=False)
    expected = hand_loglikelihood(backend.model, [backend.prefix_token_id], cont)
    assert backend.loglikelihood([("", "Praha")])[0][0] == pytest.approx(expected, abs=1e-4)


class CannedBackend:
    """Returns fixed log-likelihoods: tests the aggregation, not a model."""

    supports_loglikelihood = True
    info = ModelInfo(name="canned")

    def __init__(self, table):
        self.table = table

    def loglikelihood(self, requests, progress=None):
        return [(self.table[cont.strip()], False) for _, cont in requests]


def test_acc_and_acc_norm(tmp_path):
    items = [{"q": "x", "choices": ["aa", "bbbbbbbb"], "answer": 1}, {"q": "y", "choices": ["aa", "bbbbbbbb"], "answer": 0}]
    (tmp_path / "d.jsonl").write_text("".join(json.dumps(i) + "\n" for i in items))
    (tmp_path / "t.yaml").write_text("kind: multiple_choice\ndata: d.jsonl\ndoc_to_text: '{q}'\ndoc_to_choice: choices\ndoc_to_target: answer\n")
    task = load_task(tmp_path / "t.yaml")
    # raw: "aa" wins (-3 > -6); per character: "bbbbbbbb" wins (-6/8 > -3/2)
    res = run_task(task, CannedBackend({"aa": -3.0, "bbbbbbbb": -6.0}))
    assert [it["pred"] for it in res.items] == [0, 0] and [it["pred_norm"] for it in res.items] == [1, 1]
    assert res.metrics["acc"] == 0.5 and res.metrics["acc_norm"] == 0.5
    assert res.metrics["acc_stderr"] == pytest.approx(np.std([0, 1], ddof=1) / math.sqrt(2))


def test_perplexity_normalizations(backend, tmp_path):
    texts = ["Praha je hlavní město České republiky.", "Ve středu bude pršet a v pátek sněžit."]
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts))
    (tmp_path / "p.yaml").write_text("kind: perplexity\ndata: c.jsonl\ndoc_to_text: '{text}'\n"
                                     "metric_list: [token_perplexity, byte_perplexity, bits_per_byte]\n")
    res = run_task(load_task(tmp_path / "p.yaml"), backend)
    ll = sum(it["loglikelihood"] for it in res.items)
    ntok = sum(len(backend.tok.encode(t, add_special_tokens=False)) for t in texts)
    nbytes = sum(len(t.encode()) for t in texts)
    assert res.metrics["token_perplexity"] == pytest.approx(math.exp(-ll / ntok))
    assert res.metrics["byte_perplexity"] == pytest.approx(math.exp(-ll / nbytes))
    assert res.metrics["bits_per_byte"] == pytest.approx(-ll / nbytes / math.log(2))
    first = texts[0]
    ids = backend.tok.encode(first, add_special_tokens=False)
    assert res.items[0]["loglikelihood"] == pytest.approx(hand_loglikelihood(backend.model, [backend.prefix_token_id], ids), abs=1e-3)


def test_generation_stops_and_is_deterministic(backend):
    params = GenParams(max_tokens=8, until=["\n"])
    a = backend.generate(["Otázka: Kolik je 2 + 2?\nOdpověď:", "Ahoj"], params)
    b = backend.generate(["Otázka: Kolik je 2 + 2?\nOdpověď:", "Ahoj"], params)
    assert a == b and all("\n" not in x for x in a)


def test_text_metrics():
    assert M.exact_match(" Praha.", ["praha"]) == 1.0 and M.exact_match("Brno", ["Praha"]) == 0.0
    assert M.regex_extract("Odpověď je 42 kusů", r"(\d+)") == "42"
    assert M.f1(["a", "b"], ["b", "c"]) == pytest.approx(0.5)
    assert M.rouge_l("the cat sat on the mat", "the cat on the mat") == pytest.approx(2 * (5 / 6) * 1 / (5 / 6 + 1))
    assert M.rouge_l("x y", "a b") == 0.0
    assert M.length_ok("jedna dvě tři", "words", 1, 3) == 1.0 and M.length_ok("jedna dvě tři čtyři", "words", 1, 3) == 0.0
    schema = {"type": "object", "required": ["quality", "language"],
              "properties": {"quality": {"type": "integer", "minimum": 1, "maximum": 5}, "language": {"enum": ["cs", "en"]}}}
    assert M.json_valid('Sure: ```json\n{"quality": 3, "language": "cs"}\n```', schema) == 1.0
    assert M.json_valid('{"quality": 9, "language": "cs"}', schema) == 0.0
    assert M.json_valid('{"quality": true, "language": "cs"}', schema) == 0.0
    assert M.json_valid("not json", schema) == 0.0


def test_mcnemar_and_bootstrap_against_scipy():
    from scipy.stats import binomtest

    rng = np.random.default_rng(1)
    a = (rng.random(80) < 0.5).astype(float)
    b = a.copy()
    b[:12] = 1.0
    res = M.mcnemar(a, b)
    n01 = int(((a == 0) & (b == 1)).sum())
    n10 = int(((a == 1) & (b == 0)).sum())
    assert (res["b_better"], res["a_better"]) == (n01, n10)
    assert res["p_value"] == pytest.approx(binomtest(min(n01, n10), n01 + n10, 0.5).pvalue)
    boot = M.paired_bootstrap(a, a + 0.1, seed=0)
    assert boot["delta"] == pytest.approx(0.1) and boot["p_value"] == 0.0 and boot["ci_low"] == pytest.approx(0.1)
    same = M.paired_bootstrap(a, a)
    assert same["p_value"] == 1.0
