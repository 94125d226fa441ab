"""Per-request sampling: seeds, stop strings/tokens, penalties, filters, logprobs and parameter validation."""

from __future__ import annotations

import pytest
import torch

from lmsmith.errors import LmsmithError
from lmsmith.serve import SamplingParams
from lmsmith.serve.engine import Engine
from lmsmith.serve.sampler import filter_logits


@pytest.fixture(scope="module")
def engine(tiny_models):
    return Engine(str(tiny_models["llama"]), block_size=4)


def run(engine, prompts, params_list):
    for i, (p, sp) in enumerate(zip(prompts, params_list)):
        engine.add_request(f"q{i}", p, sp)
    done, deltas = {}, {}
    while engine.has_unfinished():
        for o in engine.step():
            deltas.setdefault((o.request_id, o.index), []).append(o.text_delta)
            if o.finished:
                done[(o.request_id, o.index)] = o
    for k, o in done.items():
        assert "".join(deltas[k]) == o.text
    return done


def test_same_seed_same_output_regardless_of_batch(engine):
    sp = SamplingParams(max_tokens=16, temperature=1.0, seed=42, ignore_eos=True)
    alone = run(engine, ["The quick"], [sp])[("q0", 0)].token_ids
    mixed = run(engine, ["Warszawa", "The quick", "Zażółć"],
                [SamplingParams(max_tokens=30, temperature=0.7, ignore_eos=True), sp,
                 SamplingParams(max_tokens=5, temperature=0, ignore_eos=True)])
    assert mixed[("q1", 0)].token_ids == alone
    other = run(engine, ["The quick"], [SamplingParams(max_tokens=16, temperature=1.0, seed=7, ignore_eos=True)])
    assert other[("q0", 0)].token_ids != alone


def test_stop_string_is_trimmed_and_reported(engine):
    base = run(engine, ["Praha je"], [SamplingParams(max_tokens=30, temperature=0, ignore_eos=True)])[("q0", 0)]
    text = base.text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert len(stop) == 3 and text.find(stop) > 0
    out = run(engine, ["Praha je"], [SamplingParams(max_tokens=30, temperature=0, stop=[stop, "\x00never"])])[("q0", 0)]
    assert out.finish_reason == "stop" and out.stop_reason == stop
    assert out.text == text[:text.find(stop)]


def test_stop_token_ids_and_max_tokens(engine):
    base = run(engine, ["Praha je"], [SamplingParams(max_tokens=12, temperature=0, ignore_eos=True)])[("q0", 0)]
    assert base.finish_reason == "length" and len(base.token_ids) == 12
    tok = base.token_ids[5]
    out = run(engine, ["Praha je"], [SamplingParams(max_tokens=12, temperature=0, stop_token_ids=[tok])])[("q0", 0)]
    first = base.token_ids.index(tok)
    assert out.token_ids == base.token_ids[:first + 1]
    assert out.finish_reason == "stop" and out.stop_reason == tok


def test_eos_stops_unless_ignored(tiny_models):
    engine = Engine(str(tiny_models["llama"]))
    assert engine.eos_token_ids[0] == 2  # from generation_config.json
    base = run(engine, ["Praha je"], [SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)])[("q0", 0)]
    eos = base.token_ids[3]
    engine.eos_token_ids = [eos]
    out = run(engine, ["Praha je"], [SamplingParams(max_tokens=10, temperature=0)])[("q0", 0)]
    assert out.token_ids == base.token_ids[:base.token_ids.index(eos) + 1]
    assert out.finish_reason == "stop" and out.stop_reason is None
    ign = run(engine, ["Praha je"], [SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)])[("q0", 0)]
    assert ign.token_ids == base.token_ids


def test_logprobs_are_consistent(engine):
    sp = SamplingParams(max_tokens=6, temperature=0, logprobs=True, top_logprobs=4, ignore_eos=True)
    engine.add_request("lp", "The quick", sp)
    recs = []
    while engine.has_unfinished():
        for o in engine.step():
            assert len(o.logprobs) == len(o.new_token_ids)
            recs += o.logprobs
    assert len(recs) == 6
    for r in recs:
        top = r["top_logprobs"]
        assert len(top) == 4 and [lp for _, lp in top] == sorted((lp for _, lp in top), reverse=True)
        assert top[0][0] == r["token_id"] and top[0][1] == pytest.approx(r["logprob"])
        assert r["logprob"] <= 0
        assert sum(torch.tensor([lp for _, lp in top]).exp().tolist()) <= 1.0 + 1e-5


def test_penalties_change_greedy_output(engine):
    plain = run(engine, ["The quick"], [SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)])[("q0", 0)]
    rep = run(engine, ["The quick"], [SamplingParams(max_tokens=20, temperature=0, ignore_eos=True,
                                                     presence_penalty=2.0, frequency_penalty=2.0)])[("q0", 0)]
    assert len(set(rep.token_ids)) >= len(set(plain.token_ids))
    strong = run(engine, ["The quick"], [SamplingParams(max_tokens=20, temperature=0, ignore_eos=True,
                                                        repetition_penalty=50.0)])[("q0", 0)]
    prompt = set(engine.encode("The quick"))
    assert len(set(strong.token_ids)) == 20 and not prompt & set(strong.token_ids)


def test_filters_keep_the_right_tokens():
    row = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    assert torch.isfinite(filter_logits(row, 2, 1.0, 0.0)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(row, 0, 0.7, 0.0)).tolist() == [True, True, False, False]
    assert torch.isfinite(filter_logits(row, 0, 0.5, 0.0)).tolist() == [True, False, False, False]
    assert torch.isfinite(filter_logits(row, 0, 1.0, 0.25)).tolist() == [True, True, True, False]


def test_top_k_one_is_greedy(engine):
    g = run(engine, ["Zażółć"], [SamplingParams(max_tokens=10, temperature=0, ignore_eos=True)])[("q0", 0)]
    k1 = run(engine, ["Zażółć"], [SamplingParams(max_tokens=10, temperature=1.5, top_k=1, ignore_eos=True)])[("q0", 0)]
    assert g.token_ids == k1.token_ids


@pytest.mark.parametrize("kwargs", [dict(max_tokens=0), dict(temperature=-1), dict(top_p=0), dict(top_p=1.5),
                                    dict(min_p=2), dict(n=0), dict(top_k=-5), dict(presence_penalty=3),
                                    dict(repetition_penalty=0), dict(top_logprobs=50), dict(stop=[""]),
                                    dict(temperature=float("nan")), dict(seed="x"), dict(json_schema="{}")])
def test_invalid_sampling_params_raise(kwargs):
    with pytest.raises(LmsmithError, match="invalid sampling parameter"):
        SamplingParams(**kwargs).validate()


def test_engine_validates_params(engine):
    with pytest.raises(LmsmithError):
        engine.add_request("bad", "x", SamplingParams(temperature=-1))
    assert not engine.has_unfinished()
