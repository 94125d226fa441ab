"""Tensor parallelism on CPU (gloo, 2 ranks): same greedy tokens as one rank, sharded KV cache, clear errors."""

from __future__ import annotations

import os
import signal
import time

import pytest
import torch
import torch.nn.functional as F

from lmsmith.errors import LmsmithError
from lmsmith.serve import LLM, SamplingParams, tp_layers
from lmsmith.tiny import build_tiny

PROMPTS = ["hello world", "the cat sat on the mat and then", "a", "one two three four five six seven eight nine " * 3]
GREEDY = SamplingParams(max_tokens=12, temperature=0.0, ignore_eos=True, logprobs=True, top_logprobs=2)
# a small token budget: long prompts prefill in chunks, so steps mix prefill chunks with decodes
ENGINE = dict(dtype="float32", max_num_seqs=4, max_num_batched_tokens=24, max_model_len=256)


def tokens(llm: LLM, params: SamplingParams = GREEDY) -> list[list[int]]:
    return [r.outputs[0].token_ids for r in llm.generate(PROMPTS, params, use_tqdm=False)]


def same_greedy(ref: LLM, llm: LLM) -> bool:
    """Greedy tokens equal; a continuation may only part where the reference's top two are a near-tie (1e-5
    nats: fp32 summation order differs between one rank and two)."""
    for a, b in zip(ref, llm.generate(PROMPTS, GREEDY, use_tqdm=False)):
        ta, tb = a.outputs[0].token_ids, b.outputs[0].token_ids
        if ta != tb:
            i = next(k for k in range(len(ta)) if ta[k] != tb[k])
            (_, l1), (_, l2) = a.outputs[0].logprobs[i]["top_logprobs"][:2]
            if l1 - l2 >= 1e-5:
                return False
    return True


def test_tp2_matches_tp1_llama(tiny_dir, monkeypatch):
    sampled = SamplingParams(max_tokens=6, temperature=0.8, seed=3)
    with LLM(str(tiny_dir), **ENGINE) as one:
        want = one.generate(PROMPTS, GREEDY, use_tqdm=False)
        want_sampled = tokens(one, sampled)
        kv_one = one.engine.runner.kv_bytes_per_block(16)
    # overlapped decoding (opt-in for TP): steps launched from the previous step's tokens, broadcast by rank 0
    monkeypatch.setenv("LMSMITH_TP_OVERLAP", "1")
    with LLM(str(tiny_dir), tensor_parallel_size=2, async_scheduling=True, **ENGINE) as two:
        assert two.engine.async_scheduling
        runner, calls = two.engine.runner, []
        step = runner.decode_step
        runner.decode_step = lambda *a: calls.append(a[1] is not None) or step(*a)
        assert same_greedy(want, two)
        assert tokens(two, sampled) == want_sampled  # sampled on rank 0, fed to the workers by broadcast
        assert any(calls)  # overlapped steps ran, fed from device tokens
        assert two.engine.runner.kv_bytes_per_block(16) * 2 == kv_one  # half the KV heads per rank
        assert two.engine.runner.spec.num_heads == 2 and two.engine.runner.spec.num_kv_heads == 1
        procs = list(two.engine.runner.procs)
    assert all(not p.is_alive() for p in procs)  # close() stopped the worker
    assert not torch.distributed.is_initialized()


def test_tp2_qwen2_bias_and_dead_worker(tmp_path):
    d = build_tiny(tmp_path / "q", "qwen2", seed=1)
    with LLM(str(d), **ENGINE) as one:
        want = one.generate(PROMPTS, GREEDY, use_tqdm=False)
    llm = LLM(str(d), tensor_parallel_size=2, async_scheduling=True, **ENGINE)
    try:
        assert not llm.engine.async_scheduling  # TP overlap not opted in: synchronous steps
        assert same_greedy(want, llm)
        worker = llm.engine.runner.procs[0]
        os.kill(worker.pid, signal.SIGKILL)
        worker.join(10)
        for _ in range(2):  # the step that finds the dead worker fails, and so does the next: no hang
            with pytest.raises(LmsmithError, match=r"tensor-parallel worker failed \(rank 1: .*\); the engine has stopped"):
                tokens(llm)
    finally:
        t = time.monotonic()
        llm.close()
        assert time.monotonic() - t < 20
    assert not torch.distributed.is_initialized()


def test_error_heads_not_divisible(tiny_dir):
    with pytest.raises(LmsmithError, match="4 attention heads cannot be split evenly across tensor_parallel_size=3"):
        LLM(str(tiny_dir), tensor_parallel_size=3)
    with pytest.raises(LmsmithError, match="positive integer"):
        LLM(str(tiny_dir), tensor_parallel_size=0)


def test_error_kv_heads_not_divisible(tmp_path):
    d = build_tiny(tmp_path / "m", "llama", num_attention_heads=4, num_key_value_heads=1)
    with pytest.raises(LmsmithError, match="1 KV heads cannot be split"):
        LLM(str(d), tensor_parallel_size=2)


def test_error_more_ranks_than_gpus(monkeypatch):
    from lmsmith.serve.llama import spec_from_config
    from lmsmith.tiny import tiny_config

    spec = spec_from_config(tiny_config("llama"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(LmsmithError, match="needs 2 GPUs but 1 are visible"):
        tp_layers.check_tp(spec, 2, torch.device("cuda"))
    tp_layers.check_tp(spec, 2, torch.device("cpu"))  # CPU ranks need no GPUs


def test_error_hf_fallback(tmp_path):
    d = build_tiny(tmp_path / "g", "gemma2")
    with pytest.raises(LmsmithError, match="tensor parallelism needs the native runner"):
        LLM(str(d), tensor_parallel_size=2)


def test_cli_reports_tp_error(tiny_dir, capsys):
    from lmsmith.cli import main

    assert main(["generate", str(tiny_dir), "--prompt", "hi", "--tensor-parallel-size", "3"]) != 0
    assert "cannot be split evenly" in capsys.readouterr().err


class _OneProcess(tp_layers.TPContext):
    """A rank whose collectives are the identity: the test sums/concatenates the ranks' outputs itself."""

    def all_reduce(self, t):
        return t

    def all_gather_last(self, t):
        return t


def test_vocab_parallel_shards_recombine():
    """An odd vocabulary (11 rows over 2 ranks): the last shard is padded, embedding and logits still match."""
    vocab, hidden = 11, 6
    w = torch.randn(vocab, hidden)
    ids = torch.tensor([0, 5, 6, 10, 3])
    h = torch.randn(3, hidden)
    emb, logits = 0, []
    for rank in range(2):
        tp = _OneProcess(rank, 2, "gloo")
        shard = tp_layers.cut_shard("model.embed_tokens.weight", tuple(w.shape), lambda i: w if i is None else w[i], tp,
                              torch.float32)
        assert shard.shape == (6, hidden)
        e = tp_layers.VocabParallelEmbedding(tp, vocab, hidden)
        e.weight.data = shard
        emb = emb + e(ids)
        head = tp_layers.VocabParallelLMHead(tp, vocab, hidden)
        head.weight.data = shard
        logits.append(F.linear(h, head.weight))
    torch.testing.assert_close(emb, F.embedding(ids, w))
    torch.testing.assert_close(torch.cat(logits, -1)[:, :vocab], F.linear(h, w))


def test_shard_layout():
    tp = tp_layers.TPContext(1, 2, "gloo")
    assert tp_layers.shard_index("model.layers.0.self_attn.q_proj.weight", (8, 4), tp) == (slice(4, 8),)
    assert tp_layers.shard_index("model.layers.0.mlp.down_proj.weight", (4, 8), tp) == (slice(None), slice(4, 8))
    assert tp_layers.shard_index("model.layers.0.self_attn.o_proj.bias", (4,), tp) == "zero"  # added once, on rank 0
    assert tp_layers.shard_index("model.layers.0.input_layernorm.weight", (4,), tp) is None


def test_dummy_load_format(tiny_dir):
    llm = LLM(str(tiny_dir), load_format="dummy", **ENGINE)
    out = tokens(llm)
    assert all(len(t) == 12 for t in out)
    with pytest.raises(LmsmithError, match="load_format"):
        LLM(str(tiny_dir), load_format="nope")


@pytest.mark.slow  # another pair of engines through the CLI (~10 s)
def test_cli_generate_tp2_same_text(tiny_dir, capsys):
    from lmsmith.cli import main

    args = ["generate", str(tiny_dir), "--prompt", "the cat", "--max-tokens", "8", "--dtype", "float32"]
    assert main(args) == 0
    one = capsys.readouterr().out
    assert main(args + ["--tp", "2"]) == 0
    assert capsys.readouterr().out == one


def test_failed_start_leaves_no_workers(tmp_path):
    """A broken checkpoint fails on every rank: the error names the problem and no worker or group is left."""
    import multiprocessing as mp

    from safetensors.torch import load_file, save_file

    d = build_tiny(tmp_path / "broken", "llama")
    sd = load_file(str(d / "model.safetensors"))
    del sd["model.layers.1.mlp.down_proj.weight"]
    save_file(sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(LmsmithError, match="missing 1 weights"):
        LLM(str(d), tensor_parallel_size=2, **ENGINE)
    assert not torch.distributed.is_initialized()
    assert not [p for p in mp.active_children() if p.name.startswith("lmsmith-tp")]
