"""The HTTP server on a CUDA engine (tiny model: no downloads on the GPU machine)."""

from __future__ import annotations

import json
import threading

import pytest
import torch

pytest.importorskip("fastapi")
pytest.importorskip("openai")


def A_math(q, k, v, mask) -> torch.Tensor:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel([SDPBackend.MATH]):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None], scale=0.125,
                                                                enable_gqa=True).float()


def test_prefix_hit_attention_runs_flash_and_matches_the_mask():
    """A chunk after cached tokens attends bottom-right causally through flash attention (no materialized
    [heads, n, ctx] score matrix as with the boolean mask and the math backend). Neither path is bit-identical
    to the same rows of a full prefill (H100: both 1.95e-3 max, one bf16 ulp), which is why the server test
    compares requests that take the same path."""
    import lmsmith.serve.attention as A

    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(1, h, n, 64, device="cuda", generator=g, dtype=torch.bfloat16)
               for h, n in ((32, 40), (8, 168), (8, 168)))
    out = A._lower_right_causal(q, k, v, 0.125, True)
    assert out is not None and A._LOWER_RIGHT_OK
    mask = A._window_mask(torch.arange(128, 168, device="cuda"), 168, None, "cuda")
    ref = torch.nn.functional.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask[None, None],
                                                           scale=0.125, enable_gqa=True)
    assert (out.float() - ref).abs().max().item() < 2e-2
    # the last rows of a full causal prefill: the same kernel, so (near) the same numbers
    full_q = torch.cat([torch.randn(1, 32, 128, 64, device="cuda", dtype=torch.bfloat16, generator=g), q], dim=2)
    full = torch.nn.functional.scaled_dot_product_attention(full_q, k, v, is_causal=True, scale=0.125, enable_gqa=True)
    gap = (full[:, :, 128:].float() - out.float()).abs().max().item()
    print(f"prefix-hit vs full prefill attention: max |diff| {gap:.2e} (math backend with a mask: "
          f"{(full[:, :, 128:].float() - A_math(q, k, v, mask)).abs().max().item():.2e})")
    assert gap < 1e-2  # H100 (2026-11-23): 1.95e-03, the same as the math backend


def test_server_on_cuda(tiny_dir):
    import jsonschema
    from openai import OpenAI

    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import BackgroundServer, create_app

    engine = Engine(str(tiny_dir), device="cuda", max_num_seqs=16)
    with BackgroundServer(create_app(engine, "tiny", max_num_seqs=16)) as srv:
        client = OpenAI(base_url=srv.url + "/v1", api_key="none", max_retries=0, timeout=120)
        msgs = [{"role": "user", "content": "Hi"}]
        # like with like: this first request puts the prompt's full blocks into the prefix cache, so the two
        # compared requests both reuse them and compute the same remaining tokens (a full prefill and a
        # prefix-hit prefill run GEMMs of other shapes; a random model's near-tied bf16 logits can flip)
        fixed = {"ignore_eos": True}  # the random model may sample EOS early (it did after 8 tokens on the H100)
        client.chat.completions.create(model="tiny", messages=msgs, max_tokens=1, temperature=0)
        r = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=16, temperature=0, extra_body=fixed)
        streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(
            model="tiny", messages=msgs, max_tokens=16, temperature=0, stream=True, extra_body=fixed))
        assert streamed == r.choices[0].message.content and r.usage.completion_tokens == 16
        assert r.usage.prompt_tokens_details.cached_tokens > 0
        schema = {"type": "object", "properties": {"n": {"type": "integer", "minimum": 0, "maximum": 99}},
                  "required": ["n"], "additionalProperties": False}
        j = client.chat.completions.create(model="tiny", messages=msgs, max_tokens=40, temperature=0, response_format={
            "type": "json_schema", "json_schema": {"name": "n", "schema": schema}})
        jsonschema.validate(json.loads(j.choices[0].message.content), schema)
        texts: dict[int, str] = {}

        def worker(i: int) -> None:
            texts[i] = client.completions.create(model="tiny", prompt=f"Q{i}", max_tokens=8,
                                                 temperature=0).choices[0].text

        threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert len(texts) == 16


def test_prefix_hit_prefill_matches_full_prefill(tiny_dir):
    """Engine level: the first token's log-probabilities after a prefix-cache hit are those of a full prefill
    (up to bf16 GEMM-shape rounding), for a prompt of several blocks."""
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.sampling_params import SamplingParams

    prompt = [(7 * i) % 400 + 50 for i in range(70)]
    sp = SamplingParams(max_tokens=1, temperature=0.0, logprobs=True, top_logprobs=5)

    def first_logprobs(engine: Engine, rid: str) -> dict[int, float]:
        engine.add_request(rid, prompt, sp)
        outs = []
        while engine.has_unfinished():
            outs += engine.step()
        return dict(outs[-1].logprobs[0]["top_logprobs"])

    cached = Engine(str(tiny_dir), device="cuda", dtype="bfloat16", max_num_seqs=4)
    first_logprobs(cached, "warm")
    hit = first_logprobs(cached, "hit")
    assert cached.stats()["prefix_cache_hits"] >= 64
    fresh = first_logprobs(Engine(str(tiny_dir), device="cuda", dtype="bfloat16", max_num_seqs=4,
                                  enable_prefix_caching=False), "full")
    shared = set(hit) & set(fresh)
    assert len(shared) >= 3
    assert max(abs(hit[t] - fresh[t]) for t in shared) < 0.05
