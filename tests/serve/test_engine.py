"""Engine correctness: parity with transformers, batching, chunked prefill, paged KV cache, prefix caching,
preemption, aborts and the offline API."""

from __future__ import annotations

import pytest
import torch

from lmsmith.errors import LmsmithError
from lmsmith.serve import LLM, SamplingParams
from lmsmith.serve.engine import Engine

PROMPTS = ["The quick brown fox", "Praha je hlavní město České republiky. Warszawa",
           "Zażółć gęślą jaźń. 0123456789 {\"name\": \"calculate\"", "user"]
GREEDY = SamplingParams(max_tokens=24, temperature=0.0)


def hf_greedy(model_dir, prompts_ids, max_new):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    outs = []
    for ids in prompts_ids:
        with torch.inference_mode():
            o = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                               max_new_tokens=max_new, do_sample=False, pad_token_id=2)
        outs.append(o[0, len(ids):].tolist())
    return outs


def run_all(engine: Engine, prompts, params) -> dict[str, list]:
    for i, p in enumerate(prompts):
        engine.add_request(f"r{i}", p, params)
    done: dict[str, list] = {}
    while engine.has_unfinished():
        for out in engine.step():
            if out.finished:
                done.setdefault(out.request_id, []).append(out)
    return {k: [o.token_ids for o in sorted(v, key=lambda o: o.index)] for k, v in done.items()}


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_greedy_matches_transformers(tiny_models, arch):
    engine = Engine(str(tiny_models[arch]), block_size=4, max_num_batched_tokens=8)  # forces chunked prefill
    assert engine.native
    ids = [engine.encode(p) for p in PROMPTS]
    ref = hf_greedy(tiny_models[arch], ids, GREEDY.max_tokens)
    got = run_all(engine, PROMPTS, GREEDY)
    assert [got[f"r{i}"][0] for i in range(len(PROMPTS))] == ref
    assert engine.stats()["kv_blocks_used"] == 0  # everything freed


def test_llama3_rope_scaling_matches_transformers(tmp_path):
    from lmsmith.tiny import build_tiny

    rope = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32, "rope_theta": 500000.0}
    d = build_tiny(tmp_path / "l3", "llama", rope_parameters=rope)
    engine = Engine(str(d), block_size=4, max_num_batched_tokens=8)
    ids = [engine.encode(p) for p in PROMPTS]
    got = run_all(engine, PROMPTS, GREEDY)
    assert [got[f"r{i}"][0] for i in range(len(PROMPTS))] == hf_greedy(d, ids, GREEDY.max_tokens)


def test_mistral_sliding_window_matches_transformers(tmp_path):
    from lmsmith.tiny import build_tiny

    d = build_tiny(tmp_path / "sw", "mistral", sliding_window=6)
    engine = Engine(str(d), block_size=4, max_num_batched_tokens=8)
    assert engine.runner.spec.sliding_window == 6
    ids = [engine.encode(p) for p in PROMPTS]
    ref = hf_greedy(d, ids, GREEDY.max_tokens)
    got = run_all(engine, PROMPTS, GREEDY)
    assert [got[f"r{i}"][0] for i in range(len(PROMPTS))] == ref
    engine.runner.spec.sliding_window = None  # full attention really gives other tokens: the window is exercised
    full = run_all(engine, PROMPTS, GREEDY)
    assert [full[f"r{i}"][0] for i in range(len(PROMPTS))] != ref


def test_unsupported_architecture_falls_back_to_transformers(tiny_models):
    engine = Engine(str(tiny_models["gemma2"]), block_size=4)
    assert not engine.native
    ids = [engine.encode(p) for p in PROMPTS[:2]]
    ref = hf_greedy(tiny_models["gemma2"], ids, 8)
    got = run_all(engine, PROMPTS[:2], SamplingParams(max_tokens=8, temperature=0))
    assert [got["r0"][0], got["r1"][0]] == ref
    with pytest.raises(LmsmithError, match="no native implementation"):
        Engine(str(tiny_models["gemma2"]), allow_fallback=False)


def test_tiny_kv_budget_preempts_and_still_matches(tiny_models):
    params = SamplingParams(max_tokens=20, temperature=0.0, ignore_eos=True)
    ref = run_all(Engine(str(tiny_models["llama"]), block_size=4), PROMPTS, params)
    small = Engine(str(tiny_models["llama"]), block_size=4, num_kv_blocks=14, max_num_batched_tokens=16)
    got = run_all(small, PROMPTS, params)
    assert got == ref
    stats = small.stats()
    assert stats["preemptions"] > 0
    assert stats["kv_blocks_used"] == 0


def test_prefix_cache_reuses_shared_system_prompt(tiny_models):
    system = "Praha je hlavní město České republiky. Warszawa jest stolicą Polski. Ljubljana je glavno mesto. "
    engine = Engine(str(tiny_models["llama"]), block_size=4)
    params = SamplingParams(max_tokens=6, temperature=0.0, ignore_eos=True)
    first = run_all(engine, [system + "The quick"], params)
    before = engine.stats()
    engine.add_request("second", system + "Paris is", params)
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    after = engine.stats()
    shared = len(engine.encode(system)) // 4 * 4 - 4  # full blocks of the common prefix, conservatively
    assert outs[-1].num_cached_tokens >= shared > 0
    assert after["prefix_cache_hits"] - before["prefix_cache_hits"] == outs[-1].num_cached_tokens
    # same answer as an engine without the cache
    plain = Engine(str(tiny_models["llama"]), block_size=4, enable_prefix_caching=False)
    again = run_all(plain, [system + "The quick", system + "Paris is"], params)
    assert again["r0"] == first["r0"] and again["r1"][0] == outs[-1].token_ids


def test_n_samples_share_prompt_blocks(tiny_models):
    engine = Engine(str(tiny_models["llama"]), block_size=4)
    p = SamplingParams(max_tokens=10, temperature=1.0, seed=3, n=3, ignore_eos=True)
    got = run_all(engine, [PROMPTS[1]], p)["r0"]
    assert len(got) == 3 and len({tuple(g) for g in got}) > 1
    assert engine.stats()["prefix_cache_hits"] >= 2 * 4  # samples 1 and 2 reuse sample 0's prompt blocks


def test_abort_frees_blocks_at_once(tiny_models):
    engine = Engine(str(tiny_models["llama"]), block_size=4)
    engine.add_request("a", PROMPTS[1], SamplingParams(max_tokens=50, ignore_eos=True))
    engine.add_request("b", PROMPTS[0], SamplingParams(max_tokens=3, temperature=0, ignore_eos=True))
    engine.step()
    assert engine.stats()["kv_blocks_used"] > 0
    engine.abort("a")
    used = engine.stats()["kv_blocks_used"]
    outs = []
    while engine.has_unfinished():
        outs += engine.step()
    aborted = [o for o in outs if o.request_id == "a"]
    assert len(aborted) == 1 and aborted[0].finished and aborted[0].finish_reason == "abort"
    assert used <= 2 and engine.stats()["kv_blocks_used"] == 0
    assert [o.finish_reason for o in outs if o.request_id == "b" and o.finished] == ["length"]


def test_prompt_longer_than_context_is_rejected(tiny_models):
    engine = Engine(str(tiny_models["llama"]), max_model_len=16)
    with pytest.raises(LmsmithError, match=r"20 tokens.*16 tokens"):
        engine.add_request("x", list(range(3, 23)), SamplingParams())
    with pytest.raises(LmsmithError, match="out of range"):
        engine.add_request("y", [10**6], SamplingParams())


def test_generation_stops_at_context_length(tiny_models):
    engine = Engine(str(tiny_models["llama"]), max_model_len=12)
    got = run_all(engine, [list(range(3, 10))], SamplingParams(max_tokens=100, temperature=0, ignore_eos=True))
    assert len(got["r0"][0]) == 5


def test_streamed_deltas_reassemble_text_and_never_split_characters(tiny_models):
    engine = Engine(str(tiny_models["llama"]))
    engine.add_request("s", "Příliš žluťoučký", SamplingParams(max_tokens=40, temperature=1.0, seed=0, ignore_eos=True))
    deltas, final = [], None
    while engine.has_unfinished():
        for out in engine.step():
            deltas.append(out.text_delta)
            final = out
    assert "".join(deltas) == final.text
    decoded = engine.tokenizer.decode(final.token_ids, skip_special_tokens=True)
    assert decoded.startswith(final.text) and len(decoded) - len(final.text) <= 1


def test_llm_generate_returns_timing_and_chat_applies_template(tiny_models):
    llm = LLM(str(tiny_models["llama"]), block_size=4)
    res = llm.generate(PROMPTS[:2] + [[5, 6, 7]], SamplingParams(max_tokens=5, temperature=0, ignore_eos=True),
                       use_tqdm=False)
    assert [len(r.outputs[0].token_ids) for r in res] == [5, 5, 5]
    for r in res:
        assert r.ttft is not None and r.ttft > 0
        assert len(r.token_times) == 5 and r.token_times == sorted(r.token_times) and r.token_times[0] == r.ttft
    assert res[2].prompt_token_ids == [5, 6, 7]
    chat = llm.chat([{"role": "user", "content": "Hi"}], SamplingParams(max_tokens=3, temperature=0), use_tqdm=False)
    templ = llm.tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"]
    assert chat[0].prompt_token_ids == list(templ)


def test_bad_engine_arguments_are_clear(tiny_models):
    with pytest.raises(LmsmithError, match="max_num_seqs"):
        Engine(str(tiny_models["llama"]), max_num_seqs=0)
    with pytest.raises(LmsmithError, match="exceeds"):
        Engine(str(tiny_models["llama"]), max_model_len=10**6)


def test_lora_adapter_is_merged_into_the_native_model(tiny_models, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_models["llama"], dtype=torch.float32)
    torch.manual_seed(0)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "v_proj", "down_proj"],
                                                 init_lora_weights=False))
    peft_model.save_pretrained(tmp_path / "adapter")
    merged = peft_model.merge_and_unload().eval()
    engine = Engine(str(tmp_path / "adapter"), block_size=4)
    assert engine.native
    ids = engine.encode(PROMPTS[1])
    with torch.inference_mode():
        ref = merged.generate(torch.tensor([ids]), max_new_tokens=12, do_sample=False, pad_token_id=2)[0, len(ids):].tolist()
    got = run_all(engine, [ids], SamplingParams(max_tokens=12, temperature=0))
    assert got["r0"][0] == ref
    base_out = run_all(Engine(str(tiny_models["llama"]), block_size=4), [ids], SamplingParams(max_tokens=12, temperature=0))
    assert base_out["r0"][0] != ref  # the adapter really changed the model


def test_random_workload_under_memory_pressure_keeps_outputs_and_frees_everything(tiny_models):
    import random

    rng = random.Random(0)
    shared = list(range(10, 30))  # a common prefix for some requests
    reqs = []
    for i in range(14):
        prompt = (shared if i % 3 == 0 else []) + [rng.randrange(3, 500) for _ in range(rng.randrange(1, 30))]
        reqs.append((f"x{i}", prompt, SamplingParams(max_tokens=rng.randrange(1, 25), temperature=0,
                                                     ignore_eos=True, n=1 + (i % 4 == 1))))
    aborted = {"x5", "x9"}

    def run(engine, abort_at_step):
        for rid, prompt, sp in reqs:
            engine.add_request(rid, prompt, sp)
        done, steps = {}, 0
        while engine.has_unfinished():
            for o in engine.step():
                if o.finished:
                    done[(o.request_id, o.index)] = (o.token_ids, o.finish_reason)
            steps += 1
            if steps == abort_at_step:
                for rid in aborted:
                    engine.abort(rid)
        return done

    ref = run(Engine(str(tiny_models["llama"]), block_size=4), abort_at_step=None)
    tight = Engine(str(tiny_models["llama"]), block_size=4, num_kv_blocks=20, max_num_seqs=5, max_num_batched_tokens=12)
    got = run(tight, abort_at_step=3)
    for key, (ids, reason) in got.items():
        if key[0] in aborted and reason == "abort":
            continue
        assert (ids, reason) == ref[key], key
    assert len(got) == len(ref)
    blocks = tight.blocks
    assert blocks.num_free == blocks.num_blocks and not any(blocks.ref_counts)
    assert tight.stats()["preemptions"] > 0 and tight.stats()["prefix_cache_hits"] > 0


def test_chunked_prefill_runs_alongside_decodes_under_the_token_budget(tiny_models):
    engine = Engine(str(tiny_models["llama"]), block_size=4, max_num_batched_tokens=8, max_num_seqs=2)
    engine.add_request("a", [5, 6, 7], SamplingParams(max_tokens=30, temperature=0, ignore_eos=True))
    engine.step()  # a: prefill + first token
    engine.add_request("b", list(range(10, 50)), SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))
    engine.add_request("c", [8, 9], SamplingParams(max_tokens=2, temperature=0, ignore_eos=True))
    seen_b = []
    for _ in range(6):  # b's 40-token prompt needs 6 chunks of <= 7 tokens next to a's decode
        outs = engine.step()
        assert [o.request_id for o in outs if o.request_id == "a"] == ["a"]  # a decodes every step
        seen_b += [o for o in outs if o.request_id == "b"]
        stats = engine.stats()
        assert stats["running"] == 2 and stats["waiting"] == 1  # max_num_seqs holds c back
        assert 0 < stats["kv_usage"] <= 1
    assert len(seen_b) == 1 and len(seen_b[0].new_token_ids) == 1  # b's first token after the last chunk
    assert seen_b[0].metrics.first_token_time is not None
