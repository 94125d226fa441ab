"""The overlapped decode loop (async scheduling): decode steps are launched from on-device tokens and their
outputs processed one step later. It must give exactly what the synchronous loop gives."""

from __future__ import annotations

import pytest

from lmsmith.serve import SamplingParams
from lmsmith.serve.engine import PENDING, Engine

PROMPTS = ["The quick brown fox", "Praha je hlavní město České republiky. Warszawa",
           "Zażółć gęślą jaźń. 0123456789", "user"]


def make(tiny_models, async_scheduling: bool, **kw) -> Engine:
    kw = {"block_size": 4, "max_num_batched_tokens": 64, **kw}
    return Engine(str(tiny_models["llama"]), async_scheduling=async_scheduling, **kw)


def count_launches(engine: Engine) -> list[int]:
    """Wraps runner.decode_step; returns a list whose length is the number of overlapped launches."""
    calls: list[int] = []
    inner = engine.runner.decode_step

    def wrapped(batch, prev, src_rows):
        calls.append(len(batch))
        return inner(batch, prev, src_rows)

    engine.runner.decode_step = wrapped
    return calls


def run(engine: Engine, prompts, params, abort_after: dict[str, int] | None = None):
    """All requests to completion; returns {id: final output} and {id: [streamed outputs]}."""
    plist = params if isinstance(params, list) else [params] * len(prompts)
    for i, (p, sp) in enumerate(zip(prompts, plist)):
        engine.add_request(f"r{i}", p, sp)
    final, stream = {}, {}
    steps = 0
    while engine.has_unfinished():
        for out in engine.step():
            assert PENDING not in out.token_ids and PENDING not in out.new_token_ids
            stream.setdefault((out.request_id, out.index), []).append(out)
            if out.finished:
                assert (out.request_id, out.index) not in final, "a sequence finished twice"
                final[(out.request_id, out.index)] = out
        steps += 1
        for rid, at in (abort_after or {}).items():
            if steps == at:
                engine.abort(rid)
    assert engine.stats()["kv_blocks_used"] == 0 and not engine.scheduler.running
    return final, stream


def summary(final):
    return {k: (o.token_ids, o.text, o.finish_reason, o.stop_reason) for k, o in final.items()}


def test_overlap_is_on_by_default_only_on_cuda(tiny_models):
    assert make(tiny_models, None).async_scheduling is False  # CPU: nothing to overlap with, no lag added
    assert make(tiny_models, True).async_scheduling is True


def test_overlapped_greedy_equals_synchronous_and_really_overlaps(tiny_models):
    params = [SamplingParams(max_tokens=m, temperature=0.0, ignore_eos=True) for m in (1, 2, 17, 30)]
    ref, _ = run(make(tiny_models, False), PROMPTS, params)
    engine = make(tiny_models, True)
    launches = count_launches(engine)
    got, stream = run(engine, PROMPTS, params)
    assert summary(got) == summary(ref)
    # every decode token after the prefill's went through a launch; none was computed past max_tokens
    assert sum(launches) == sum(p.max_tokens - 1 for p in params)
    for key, outs in stream.items():  # streamed deltas arrive in order and reassemble the text
        assert "".join(o.text_delta for o in outs) == got[key].text
        assert [t for o in outs for t in o.new_token_ids] == got[key].token_ids
    assert engine.generation_tokens == sum(p.max_tokens for p in params)


def test_max_tokens_is_exact_and_no_step_runs_past_it(tiny_models):
    engine = make(tiny_models, True)
    launches = count_launches(engine)
    got, _ = run(engine, [PROMPTS[0]], SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True))
    assert len(got[("r0", 0)].token_ids) == 6 and got[("r0", 0)].finish_reason == "length"
    assert launches == [1] * 5  # token 1 from the prefill step, tokens 2..6 launched ahead


@pytest.mark.parametrize("how", ["stop_token", "eos"])
def test_stop_token_on_an_already_launched_step_drops_the_extra_token(tiny_models, how):
    base = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    ref, _ = run(make(tiny_models, False), PROMPTS[:2], base)
    toks = ref[("r0", 0)].token_ids
    stop_tok = toks[4]  # the 5th token: decided while the 6th step is already on the device
    if how == "eos":
        params = SamplingParams(max_tokens=20, temperature=0.0)
    else:
        params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True, stop_token_ids=[stop_tok])
    sync_engine, engine = make(tiny_models, False), make(tiny_models, True)
    if how == "eos":  # make that token the model's EOS
        sync_engine.eos_token_ids = engine.eos_token_ids = [stop_tok]
    sync, _ = run(sync_engine, PROMPTS[:2], params)
    launches = count_launches(engine)
    got, stream = run(engine, PROMPTS[:2], params)
    assert summary(got) == summary(sync)
    out = got[("r0", 0)]
    assert out.token_ids == toks[:toks.index(stop_tok) + 1] and out.finish_reason == "stop"
    assert out.stop_reason == (None if how == "eos" else stop_tok)
    assert [t for o in stream[("r0", 0)] for t in o.new_token_ids] == out.token_ids  # the extra one never streamed
    assert launches  # it did overlap
    assert engine.generation_tokens == sum(len(o.token_ids) for o in got.values())


def test_stop_strings_and_text_match_synchronous(tiny_models):
    ref, _ = run(make(tiny_models, False), PROMPTS, SamplingParams(max_tokens=24, temperature=0.0, ignore_eos=True))
    text = ref[("r1", 0)].text
    stop = text[len(text) // 2:len(text) // 2 + 2] or "x"
    params = SamplingParams(max_tokens=24, temperature=0.0, stop=[stop])
    sync, _ = run(make(tiny_models, False), PROMPTS, params)
    got, stream = run(make(tiny_models, True), PROMPTS, params)
    assert summary(got) == summary(sync)
    for key, outs in stream.items():
        assert "".join(o.text_delta for o in outs) == got[key].text


def test_seeded_sampling_is_the_same_with_and_without_overlap(tiny_models):
    params = [SamplingParams(max_tokens=16, temperature=0.9, top_p=0.9, top_k=40, seed=7 + i, ignore_eos=True)
              for i in range(3)] + [SamplingParams(max_tokens=16, temperature=0.0, ignore_eos=True)]
    ref, _ = run(make(tiny_models, False), PROMPTS, params)
    got, _ = run(make(tiny_models, True), PROMPTS, params)
    assert summary(got) == summary(ref)
    n2 = SamplingParams(max_tokens=12, temperature=1.0, n=2, seed=3, ignore_eos=True)
    assert summary(run(make(tiny_models, True), PROMPTS[:1], n2)[0]) == \
        summary(run(make(tiny_models, False), PROMPTS[:1], n2)[0])


def test_abort_while_a_step_is_in_flight(tiny_models):
    params = SamplingParams(max_tokens=30, temperature=0.0, ignore_eos=True)
    ref, _ = run(make(tiny_models, False), PROMPTS[:2], params)
    engine = make(tiny_models, True)
    got, stream = run(engine, PROMPTS[:2], params, abort_after={"r0": 6})
    out = got[("r0", 0)]
    assert out.finish_reason == "abort"
    n = len(out.token_ids)
    assert 0 < n < 30 and out.token_ids == ref[("r0", 0)].token_ids[:n]
    assert [t for o in stream[("r0", 0)] for t in o.new_token_ids] == out.token_ids
    assert summary({k: v for k, v in got.items() if k[0] == "r1"}) == \
        summary({k: v for k, v in ref.items() if k[0] == "r1"})


def test_preemption_and_new_arrivals_fall_back_and_keep_outputs(tiny_models):
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    ref, _ = run(make(tiny_models, False), PROMPTS, params)
    small = make(tiny_models, True, num_kv_blocks=16, max_num_batched_tokens=16)
    got, _ = run(small, PROMPTS, params)
    assert summary(got) == summary(ref)
    assert small.stats()["preemptions"] > 0
    # requests arriving while others decode (admission waits for the in-flight step)
    engine = make(tiny_models, True)
    engine.add_request("a", PROMPTS[0], params)
    for _ in range(4):
        engine.step()
    got2, _ = run(engine, PROMPTS[1:], params)
    assert got2[("r0", 0)].token_ids == ref[("r1", 0)].token_ids


@pytest.mark.parametrize("special", ["logprobs", "penalty"])
def test_requests_that_need_the_host_run_synchronously_alongside(tiny_models, special):
    plain = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True)
    other = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True,
                           **({"logprobs": 2} if special == "logprobs" else {"repetition_penalty": 1.3}))
    ref, _ = run(make(tiny_models, False), PROMPTS[:2], [plain, other])
    got, _ = run(make(tiny_models, True), PROMPTS[:2], [plain, other])
    assert summary(got) == summary(ref)
