"""The engine on CUDA: fp32 greedy parity with transformers, bf16 sanity, batching/preemption, seeds, JSON output."""

from __future__ import annotations

import json

import pytest
import torch

from engine_runs import run_all
from lmsmith.serve import LLM, SamplingParams
from lmsmith.serve.engine import Engine

PROMPTS = ["The quick brown fox", "Praha je hlavní město České republiky. Warszawa",
           "Zażółć gęślą jaźń. 0123456789 {\"name\": \"calculate\"", "user"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lmsmith.tiny import build_tiny

    root = tmp_path_factory.mktemp("gpu-tiny")
    return {a: build_tiny(root / a, a, seed=i) for i, a in enumerate(["llama", "qwen2", "mistral"])}


def hf_greedy(model_dir, ids_list, max_new, dtype):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).to("cuda").eval()
    outs = []
    for ids in ids_list:
        with torch.inference_mode():
            o = model.generate(torch.tensor([ids], device="cuda"), attention_mask=torch.ones(1, len(ids), dtype=torch.long,
                               device="cuda"), max_new_tokens=max_new, do_sample=False, pad_token_id=2)
        outs.append(o[0, len(ids):].tolist())
    return outs


@pytest.mark.parametrize("arch", ["llama", "qwen2", "mistral"])
def test_fp32_greedy_parity_on_cuda(tiny, arch):
    engine = Engine(str(tiny[arch]), dtype="float32", device="cuda", block_size=4, max_num_batched_tokens=8)
    assert engine.native and engine.device.type == "cuda"
    ids = [engine.encode(p) for p in PROMPTS]
    ref = hf_greedy(tiny[arch], ids, 24, torch.float32)
    got = run_all(engine, PROMPTS, SamplingParams(max_tokens=24, temperature=0))
    assert [got[(f"r{i}", 0)] for i in range(len(PROMPTS))] == ref


def test_bf16_runs_and_mostly_agrees(tiny):
    engine = Engine(str(tiny["llama"]), device="cuda")  # auto = bfloat16 on CUDA
    assert engine.runner.dtype == torch.bfloat16
    ids = [engine.encode(p) for p in PROMPTS]
    ref = hf_greedy(tiny["llama"], ids, 8, torch.bfloat16)
    got = run_all(engine, PROMPTS, SamplingParams(max_tokens=8, temperature=0))
    firsts = sum(got[(f"r{i}", 0)][0] == ref[i][0] for i in range(len(PROMPTS)))
    assert firsts >= len(PROMPTS) - 1


def test_preemption_on_cuda_gives_same_outputs(tiny):
    params = SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
    ref = run_all(Engine(str(tiny["llama"]), dtype="float32", device="cuda", block_size=4), PROMPTS, params)
    small = Engine(str(tiny["llama"]), dtype="float32", device="cuda", block_size=4, num_kv_blocks=14,
                   max_num_batched_tokens=16)
    assert run_all(small, PROMPTS, params) == ref
    assert small.stats()["preemptions"] > 0 and small.stats()["kv_blocks_used"] == 0


def test_many_concurrent_requests_and_seeds_on_cuda(tiny):
    engine = Engine(str(tiny["llama"]), dtype="float32", device="cuda", max_num_seqs=32)
    sp = SamplingParams(max_tokens=16, temperature=0.8, top_p=0.9, seed=5, ignore_eos=True)
    alone = run_all(engine, ["The quick"], sp)[("r0", 0)]
    prompts = [PROMPTS[i % 4] + str(i) for i in range(40)] + ["The quick"]
    params = [SamplingParams(max_tokens=8 + i % 9, temperature=1.0, ignore_eos=True) for i in range(40)] + [sp]
    for i, (p, s) in enumerate(zip(prompts, params)):
        engine.add_request(f"m{i}", p, s)
    done = {}
    while engine.has_unfinished():
        for o in engine.step():
            if o.finished:
                done[o.request_id] = o
    assert len(done) == 41 and done["m40"].token_ids == alone
    assert all(len(done[f"m{i}"].token_ids) == 8 + i % 9 for i in range(40))


def test_json_schema_on_cuda(tiny):
    schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 9},
                                               "ok": {"type": "boolean"}}, "required": ["n", "ok"]}
    llm = LLM(str(tiny["llama"]), device="cuda")
    res = llm.generate(["x"] * 8, [SamplingParams(max_tokens=40, temperature=1.0, seed=s, json_schema=schema)
                                   for s in range(8)], use_tqdm=False)
    for r in res:
        doc = json.loads(r.outputs[0].text)
        assert set(doc) == {"n", "ok"} and 0 <= doc["n"] <= 9


def test_default_model_on_cuda(request):
    try:
        model_dir = request.getfixturevalue("default_model_dir")
    except Exception as e:  # no cached default model and no network on this machine
        pytest.skip(f"default model unavailable: {e}")
    q = [{"role": "user", "content": "What is the capital of France? Answer in one word."}]
    fp32 = LLM(str(model_dir), dtype="float32", device="cuda")
    out = fp32.chat(q, SamplingParams(max_tokens=24, temperature=0), use_tqdm=False)[0]
    assert out.outputs[0].token_ids == hf_greedy(model_dir, [out.prompt_token_ids], 24, torch.float32)[0]
    bf16 = LLM(str(model_dir), device="cuda")
    assert "Paris" in bf16.chat(q, SamplingParams(max_tokens=24, temperature=0), use_tqdm=False)[0].outputs[0].text


def test_equal_length_prompts_batched_prefill_parity(tiny):
    """Equal-length fresh prompts go through one batched causal SDPA call; results must not change."""
    engine = Engine(str(tiny["llama"]), dtype="float32", device="cuda", block_size=4, max_num_batched_tokens=256)
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(3, engine.vocab_size, (5, 13), generator=g).tolist()
    ref = hf_greedy(tiny["llama"], ids, 12, torch.float32)
    got = run_all(engine, ids, SamplingParams(max_tokens=12, temperature=0))
    assert [got[(f"r{i}", 0)] for i in range(len(ids))] == ref


def test_bs1_gemv_step_matches_cublas_step_and_overlap_matches_sync(tiny):
    """The batch-1 GEMV graph (fused SwiGLU and add+RMSNorm epilogues) computes the cuBLAS step's logits;
    the overlapped loop gives the synchronous loop's tokens on CUDA graphs (greedy and seeded sampling)."""
    engine = Engine(str(tiny["llama"]), device="cuda", max_num_seqs=4)
    graphs = engine.runner.graphs
    assert set(graphs.bs1_timings) >= {"cublas", "gemv-tuned", "head"} and all(
        not isinstance(v, str) for v in graphs.bs1_timings.values()), graphs.bs1_timings
    graphs.step.on.zero_()  # direct calls below: the inputs must stay put
    with torch.inference_mode():
        for plan in graphs.bs1_plans.values():
            for _ in range(3):  # the epilogue's ticket must reset between launches
                ref = graphs._forward(1, None).clone()
                got = graphs._forward(1, plan)
                assert ((got - ref).norm() / ref.norm()).item() < 1e-2
    graphs.step.on.fill_(1)
    graphs.last = None
    params = [SamplingParams(max_tokens=40, temperature=0, ignore_eos=True),
              SamplingParams(max_tokens=40, temperature=0.9, top_p=0.95, seed=11, ignore_eos=True)]
    for sp in params:
        outs = []
        for overlap in (True, False):
            engine.async_scheduling = overlap
            outs.append(run_all(engine, PROMPTS[:1], sp)[("r0", 0)])
        assert outs[0] == outs[1] and len(outs[0]) == 40
    engine.async_scheduling = True
    both = run_all(engine, PROMPTS[:3], params[0])  # batches 3 -> bucket 4, eager prefill, graph decode
    assert all(len(v) == 40 for v in both.values())


def test_decode_inputs_advance_on_the_device(tiny):
    """While a batch only moves forward the step's last kernel sets up the next step's inputs and writes its tokens
    to pinned memory: no copies, same outputs as copying every step (bf16 plans and fp32 cuBLAS graphs, greedy
    and seeded, one and three sequences, block size 4: a new block, hence a copy, every 4 tokens)."""
    params = [SamplingParams(max_tokens=30, temperature=0, ignore_eos=True),
              SamplingParams(max_tokens=30, temperature=0.9, top_p=0.95, seed=3, ignore_eos=True)]
    for dtype in ("bfloat16", "float32"):
        engine = Engine(str(tiny["llama"]), dtype=dtype, device="cuda", block_size=4, max_num_seqs=4)
        graphs = engine.runner.graphs
        step = graphs.step
        assert step is not None and int(step.on.item()) == 1
        for sp in params:
            for prompts in (PROMPTS[:1], PROMPTS[:3]):
                graphs.step = None  # copy in and out every step (the graphs' own advance is overwritten)
                ref = run_all(engine, prompts, sp)
                graphs.step, graphs.last = step, None
                skipped = graphs.copies_skipped
                got = run_all(engine, prompts, sp)
                assert got == ref, (dtype, sp, len(prompts))
                if len(prompts) == 1:  # 29 decode steps; at most 8 start a block
                    assert graphs.copies_skipped - skipped >= 18, graphs.copies_skipped - skipped
        run_all(engine, PROMPTS[:1], params[0])
        assert engine.runner.greedy_on_host is not None and engine.runner.greedy_on_host.is_pinned()
