"""gpt-fast (pytorch-labs/gpt-fast) as a side-by-side peer for bench/serve/serve_gpu.py, plus the bandwidth helpers.

gpt-fast is not vendored: point `--gpt-fast DIR` at a checkout (model.py, generate.py, quantize.py; kept in
an ignored folder such as .peers/gpt-fast). Its own code runs: `Transformer`/`ModelArgs` from model.py, the
`prefill` / `decode_n_tokens` loop of generate.py with `decode_one_token` compiled as its `main` does
(`torch.compile(mode="reduce-overhead", fullgraph=True)`, its inductor settings), and
`WeightOnlyInt4QuantHandler` from quantize.py for int4. Two shims, both for API drift, not speed: its
tokenizer module (sentencepiece/tiktoken, unused here) is stubbed, and on torch >= 2.5
`_convert_weight_to_int4pack` takes the weight packed two nibbles per uint8 instead of int32.
Weights are random (same shape as ours); batch 1, greedy, prompt and output lengths as ours.
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
import types
from pathlib import Path

import torch


def copy_bandwidth(gib: float = 2.0, iters: int = 20) -> float:
    """Device-to-device copy bandwidth in bytes/s (read + write bytes), a large tensor copied `iters` times."""
    n = int(gib * 2**30)
    a = torch.empty(n, dtype=torch.uint8, device="cuda")
    b = torch.empty_like(a)
    for _ in range(3):
        b.copy_(a)
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        b.copy_(a)
    end.record()
    torch.cuda.synchronize()
    secs = start.elapsed_time(end) / 1000 / iters
    del a, b
    torch.cuda.empty_cache()
    return 2 * n / secs


def decode_bytes_per_token(spec: dict, context: int, dtype_bytes: int = 2) -> float:
    """Bytes one batch-1 decode step must read: every weight matrix once (the input embedding only for its
    row, unless tied to the lm_head, which reads it whole), norms, and the K/V cache at `context` tokens."""
    h, i, L, v = spec["hidden_size"], spec["intermediate_size"], spec["num_hidden_layers"], spec["vocab_size"]
    heads, kv = spec["num_attention_heads"], spec["num_key_value_heads"]
    d = h // heads
    per_layer = h * (heads * d + 2 * kv * d) + heads * d * h + 3 * h * i + 2 * h
    weights = L * per_layer + h + v * h  # + final norm + lm_head (tied or not: read once)
    kv_cache = L * 2 * kv * d * context
    return float((weights + kv_cache) * dtype_bytes)


def _import_gptfast(path: Path):
    path = path.resolve()
    if not (path / "model.py").exists() or not (path / "generate.py").exists():
        raise FileNotFoundError(f"{path} is not a gpt-fast checkout (model.py, generate.py)")
    if "tokenizer" not in sys.modules:  # generate/quantize import it at top level; it needs sentencepiece/tiktoken
        sys.modules["tokenizer"] = types.SimpleNamespace(get_tokenizer=None)  # type: ignore[assignment]
    sys.path.insert(0, str(path))
    import generate as gf_generate
    import model as gf_model

    return gf_model, gf_generate


def _int4_shim(gf_quantize) -> None:
    """torch >= 2.5: _convert_weight_to_int4pack wants [N, K/2] uint8 (two nibbles per byte), not int32."""
    def prepare(weight_bf16, groupsize, inner_k_tiles):
        w_int32, scales_and_zeros = gf_quantize.group_quantize_tensor(weight_bf16, n_bit=4, groupsize=groupsize)
        packed = (w_int32[:, ::2] << 4 | w_int32[:, 1::2]).to(torch.uint8)
        return torch.ops.aten._convert_weight_to_int4pack(packed, inner_k_tiles), scales_and_zeros
    gf_quantize.prepare_int4_weight_and_scales_and_zeros = prepare


def gptfast_decode(path: Path, spec: dict, prompt: list[int], out_len: int, repeats: int = 3, int4: bool = False,
                   groupsize: int = 128, compile: bool = True, device: str = "cuda") -> dict:
    """{"tok_s", "runs_tok_s", "compile_s"}: gpt-fast's generate loop at batch 1 (prefill + out_len - 1 decode
    steps, tokens/s over the whole call, as gpt-fast itself reports)."""
    gf_model, gf_generate = _import_gptfast(path)
    args = gf_model.ModelArgs(block_size=max(2048, len(prompt) + out_len + 8), vocab_size=spec["vocab_size"],
                              n_layer=spec["num_hidden_layers"], n_head=spec["num_attention_heads"],
                              n_local_heads=spec["num_key_value_heads"], dim=spec["hidden_size"],
                              intermediate_size=spec["intermediate_size"], rope_base=500000.0, norm_eps=1e-5)
    torch.manual_seed(0)
    with torch.device(device):
        model = gf_model.Transformer(args)
    model = model.to(dtype=torch.bfloat16)
    with torch.no_grad():
        for p in model.parameters():  # default init is fine for speed; keep the activations tame
            p.normal_(0, 0.02) if p.dim() > 1 else p.fill_(1.0)
    if int4:
        import quantize as gf_quantize

        _int4_shim(gf_quantize)
        handler = gf_quantize.WeightOnlyInt4QuantHandler(model, groupsize)
        with contextlib.redirect_stdout(None):
            sd = handler.create_quantized_state_dict(use_cuda=device == "cuda")
        model = handler.convert_for_runtime()
        model.load_state_dict(sd, assign=True)
        model = model.to(device)
    model = model.eval()
    if not hasattr(gf_generate, "_eager_decode_one_token"):
        gf_generate._eager_decode_one_token = gf_generate.decode_one_token
    eager = gf_generate._eager_decode_one_token
    # as generate.main does (a fresh compile per model: dynamo is reset after each run)
    gf_generate.decode_one_token = torch.compile(eager, mode="reduce-overhead", fullgraph=True) if compile else eager
    ids = torch.tensor(prompt, dtype=torch.int, device=device)

    def once() -> float:
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        sync()
        t = time.perf_counter()
        with torch.no_grad():
            seq, _ = gf_generate.generate(model, ids, out_len, batch_size=1, interactive=False, draft_model=None,
                                          temperature=1e-5, top_k=1)
        sync()
        assert seq.shape[-1] == len(prompt) + out_len
        return out_len / (time.perf_counter() - t)

    t0 = time.perf_counter()
    once()  # compiles and captures
    compile_s = time.perf_counter() - t0
    rates = [once() for _ in range(repeats)]
    model = None  # frees the weights before the next side
    if device == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()
    return {"tok_s": statistics.median(rates), "runs_tok_s": [round(r, 1) for r in rates], "compile_s": round(compile_s, 1)}
