"""The batch-1 GEMV step on quantized checkpoints: the GEMV kernel reads int4 / int8 weights as stored
(dequantized in registers, with the SwiGLU, add+RMSNorm and RoPE+KV-write epilogues) and must give the
logits of the model's own step (tinygemm / the int8 Triton GEMV plus the separate element-wise kernels); greedy
decoding on it must agree with greedy decoding on the model's own step."""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

PROMPTS = ["The quick brown fox", "Praha je hlavní město České republiky. Warszawa", "0123456789 {\"name\": \"calc"]

# every projection on the GEMV kernel (tuning may keep the model's own kernel for some on a tiny model); column
# blocks larger than the int4 group (several groups per block) and smaller (a group spans several blocks)
FORCED = {
    "all-gemv": {"qkv": (4, 1024, 4), "gate_up": (8, 1024, 4), "o_proj": (16, 512, 4), "down": (4, 1024, 4),
                 "lm_head": (4, 1024, 4)},
    "small-k": {"qkv": (8, 64, 4), "gate_up": (2, 64, 2), "o_proj": (4, 64, 4), "down": (16, 64, 4),
                "lm_head": (8, 64, 4)},
    # the planar layouts (lmsmith.quant.planar): flat and per-thread-sum tiles, split-K where the row has 2 tiles
    # (the lm_head entry applies where the head is quantized; a 16-bit head keeps a stored-layout tile)
    "planar-f": {"qkv": (8, "F", 4, 2), "gate_up": (4, "F", 4, 1), "o_proj": (8, "F", 4, 2), "down": (8, "F", 4, 2),
                 "lm_head": (8, "P", 4, 1)},
    "planar-p": {"qkv": (8, "P", 4, 1), "gate_up": (8, "P", 4, 1), "o_proj": (4, "P", 4, 1), "down": (16, "P", 8, 2),
                 "lm_head": (16, "P", 8, 1)},
}


def forced(name: str, head_kind: str) -> dict:
    plan = dict(FORCED[name])
    if head_kind == "dense" and plan["lm_head"][1] in ("P", "F"):
        plan["lm_head"] = (4, 1024, 4)
    return plan


@pytest.fixture(scope="module")
def tiny_src(tmp_path_factory):
    from lmsmith.tiny import build_tiny

    # hidden 128 / intermediate 256: group 128 divides every layer
    return build_tiny(tmp_path_factory.mktemp("bs1-quant") / "tiny", "llama", hidden_size=128, intermediate_size=256)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def greedy(llm, prompts):
    """One prompt at a time: every decode step replays the batch-1 graph."""
    from lmsmith.serve import SamplingParams

    sp = SamplingParams(max_tokens=24, temperature=0, ignore_eos=True, logprobs=2)
    return [llm.generate([p], sp, use_tqdm=False)[0].outputs[0] for p in prompts]


@pytest.mark.parametrize("method,group,head,head_kind", [("int4", 128, None, "dense"), ("int4", 32, "int8", "int8"),
                                                         ("int8", None, None, "dense")],
                         ids=["int4g128", "int4g32+int8-head", "int8"])
def test_bs1_gemv_step_on_quantized_checkpoint(tiny_src, tmp_path, monkeypatch, method, group, head, head_kind):
    from lmsmith.compress.quantize import quantize_to_dir
    from lmsmith.serve import LLM
    from lmsmith.serve.gemv import bs1_eligible, weight_kind

    monkeypatch.setenv("LMSMITH_TRITON_AUTOTUNE", "0")  # the int8 layers' own Triton GEMV: one config
    qdir = tmp_path / "q"
    quantize_to_dir(tiny_src, qdir, method, group_size=group, lm_head_method=head)
    llm = LLM(str(qdir), device="cuda", max_num_seqs=4)  # bfloat16
    runner = llm.engine.runner
    graphs = runner.graphs
    model = runner.model
    assert runner.quant is not None and bs1_eligible(model)
    assert weight_kind(model.model.layers[0].self_attn.qkv_proj) == method and weight_kind(model.lm_head) == head_kind
    # the GEMV step was captured, timed and compared with the model's own step at engine start
    assert set(graphs.bs1_timings) >= {"cublas", "gemv-tuned", "head"} and all(
        not isinstance(v, str) for v in graphs.bs1_timings.values()), graphs.bs1_timings
    assert any(k.startswith("down@") and not k.endswith("@own") for k in graphs.tile_timings), graphs.tile_timings
    with torch.inference_mode():
        for plan in [*graphs.bs1_plans.values(), *(forced(name, head_kind) for name in FORCED)]:
            for _ in range(3):  # the epilogue's ticket must reset between launches
                ref = graphs._forward(1, None).clone()
                got = graphs._forward(1, plan)
                assert rel_err(got, ref) < 1e-2, plan
        from lmsmith.serve import pdl

        if pdl.supported(torch.device("cuda")):  # planar tiles under PDL (each program waits, then streams)
            ref = graphs._forward(1, None).clone()
            for name in ("planar-f", "planar-p"):
                with pdl.active(True):
                    got = graphs._forward(1, forced(name, head_kind))
                assert rel_err(got, ref) < 1e-2, name

    # greedy decoding with every projection on the GEMV vs the model's own step (a second engine); a random tiny
    # model has many near ties, so a token may flip where the reference's top two logprobs nearly tie (the
    # continuations differ after that)
    monkeypatch.setenv("LMSMITH_DECODE_GEMV", "0")
    own = LLM(str(qdir), device="cuda", max_num_seqs=4)
    assert own.engine.runner.graphs.bs1_choice == "cublas"
    ref = greedy(own, PROMPTS)
    for name in ("all-gemv", "planar-f"):
        graphs.graphs[1], graphs.logits[1] = graphs._capture(1, forced(name, head_kind))
        graphs.bs1_choice = name
        for g, r in zip(greedy(llm, PROMPTS), ref):
            assert len(g.token_ids) == len(r.token_ids) == 24
            for i, (a, b) in enumerate(zip(g.token_ids, r.token_ids)):
                if a != b:
                    top = dict(r.logprobs[i]["top_logprobs"])
                    assert a in top and abs(top[a] - top[b]) < 0.05, (name, i, a, b, top)
                    break
