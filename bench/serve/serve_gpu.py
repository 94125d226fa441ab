"""GPU serving throughput: our engine vs HF transformers on a random-init model of a real shape.

Workloads (fixed output lengths, EOS ignored) match the baselines in DEVELOPERS.md:
  decode batch 1 (128 in, 256 out); HF `generate` batch 64; 256 requests x (128 in, 256 out) offline,
  ours through the continuous-batching engine and HF's through `generate_batch` when it exists.

    python -m bench.serve.serve_gpu --shape llama-3.2-1b --out bench/results/serve_throughput-h100.json

Side by side in the same run (issue 26): `--gpt-fast DIR` runs gpt-fast (a checkout kept in an ignored folder,
never committed; see bench/serve/_gptfast.py) at batch 1 in bf16 and int4 on the same shape; `--int4` times our
engine on an int4 (group 128, int4 lm_head: gpt-fast quantizes every linear) copy of the model; the batch-1
bandwidth fraction (bytes per token / time per token / a measured device-to-device copy bandwidth) is reported for
the shape, and `--bandwidth-8b OUT` also measures it on the Llama-3.1-8B shape (a `serve_bandwidth` result).
bench/serve/serve_gpu_peers.sh runs the peer comparison in one GPU call.
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import build_model_dir, ours, prompts, quantized_copy
from bench.serve._gptfast import copy_bandwidth, decode_bytes_per_token, gptfast_decode
from lmsmith.ops.planner import SHAPES


def hf_generate(model, batch: list[list[int]], out_len: int) -> float:
    ids = torch.tensor(batch, device="cuda")
    kw = dict(max_new_tokens=out_len, min_new_tokens=out_len, do_sample=False, pad_token_id=2)
    model.generate(ids[:, :8], attention_mask=torch.ones_like(ids[:, :8]), max_new_tokens=4, do_sample=False, pad_token_id=2)
    torch.cuda.synchronize()
    t = time.perf_counter()
    model.generate(ids, attention_mask=torch.ones_like(ids), **kw)
    torch.cuda.synchronize()
    return len(batch) * out_len / (time.perf_counter() - t)


def hf_generate_batch(model, batch: list[list[int]], out_len: int) -> float | None:
    from transformers import GenerationConfig

    if not hasattr(model, "generate_batch"):
        return None
    gc = GenerationConfig(max_new_tokens=out_len, min_new_tokens=out_len, do_sample=False, eos_token_id=-1,
                          pad_token_id=2, use_cuda_graph=False, num_blocks=4096, max_batch_tokens=1024)
    try:
        model.generate_batch(inputs=batch[:4], generation_config=gc, progress_bar=False)
        torch.cuda.synchronize()
        t = time.perf_counter()
        out = model.generate_batch(inputs=batch, generation_config=gc, progress_bar=False)
        torch.cuda.synchronize()
        dt = time.perf_counter() - t
        produced = sum(len(r.generated_tokens) for r in out.values())
        return produced / dt
    except Exception as e:  # API differences across versions: report, don't crash the run
        print(f"HF generate_batch failed: {type(e).__name__}: {e}", file=sys.stderr)
        return None


def rounded(metrics: dict[str, float]) -> dict[str, float]:
    """Rates to 2 decimals; fractions and ratios (`fraction`, `_vs_`) to 4."""
    return {k: round(v, 4 if "fraction" in k or "_vs_" in k else 2) for k, v in metrics.items()}


def throughput_result(name: str, metrics: dict, args, extra: dict, shape: str | None = None) -> dict:
    workload = {"shape": shape or args.shape, "prompt_len": args.prompt_len, "output_len": args.output_len,
                "requests": args.requests, "dtype": "bfloat16", "weights": "random init"}
    return make_result(name, rounded(metrics), device=torch.device("cuda"), workload=workload, **extra)


def bandwidth_8b(args, bw: float) -> None:
    """Batch-1 bf16 decode of the Llama-3.1-8B shape: bytes per token / time per token / copy bandwidth."""
    shape = "llama-3.1-8b"
    gc.collect()
    torch.cuda.empty_cache()
    with tempfile.TemporaryDirectory() as tmp:
        d = build_model_dir(shape, Path(tmp) / "model", torch.bfloat16)
        batch = prompts(3, args.prompt_len, SHAPES[shape]["vocab_size"])
        r = ours(d, [[p] for p in batch], args.output_len)
    bpt = decode_bytes_per_token(SHAPES[shape], args.prompt_len + args.output_len // 2)
    metrics = {"decode_bs1_tok_s_8b": r["tok_s"], "bytes_per_token_bs1_gb_8b": bpt / 1e9, "copy_bw_gb_s": bw / 1e9,
               "bw_fraction_decode_bs1_8b": bpt * r["tok_s"] / bw}
    res = throughput_result("serve_bandwidth", metrics, args, {"runs_tok_s": r["runs_tok_s"], "bs1_graph": r["bs1_graph"]},
                            shape=shape)
    write_result(args.bandwidth_8b, res, echo=False)
    print("8b", json.dumps(res["metrics"]), flush=True)


def bs1_metrics(metrics: dict, extra: dict, args, r1: dict, bw: float) -> None:
    """The bf16 batch-1 run's metrics: tok/s, TTFT, and the bandwidth fraction of the shape."""
    metrics["decode_bs1_tok_s"] = r1["tok_s"]
    metrics["decode_bs1_ttft_p50_ms"] = r1["ttft_p50_ms"]
    if args.compare_sync:
        metrics["decode_bs1_sync_tok_s"] = r1["sync_tok_s"]
    print("ours bs1", r1, flush=True)
    bpt = decode_bytes_per_token(SHAPES[args.shape], args.prompt_len + args.output_len // 2)
    metrics["bytes_per_token_bs1_gb"] = bpt / 1e9
    metrics["bw_fraction_decode_bs1"] = bpt * r1["tok_s"] / bw
    extra["bs1_graph"] = {"choice": r1["bs1_graph"], "replay_ms": r1["bs1_graph_ms"], "tiles_ms": r1["bs1_tiles_ms"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-offline", action="store_true", help="batch-1 decode only")
    ap.add_argument("--compare-sync", action="store_true", help="also time ours with the overlapped decode loop off")
    ap.add_argument("--gpt-fast", metavar="DIR", help="a gpt-fast checkout (model.py, generate.py, quantize.py)")
    ap.add_argument("--int4", action="store_true", help="also time our engine on an int4 copy (group 128)")
    ap.add_argument("--int4-only", action="store_true", help="with --int4: skip the bf16 batch-1 run (int4 A/B runs)")
    ap.add_argument("--bandwidth-8b", metavar="OUT", help="also time batch-1 decode of the Llama-3.1-8B shape; "
                    "writes the serve_bandwidth result there")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    if args.int4_only and not args.int4:
        ap.error("--int4-only skips the bf16 run of --int4: add --int4")
    assert torch.cuda.is_available(), "needs CUDA"

    metrics: dict[str, float] = {}
    extra: dict = {}

    def save() -> None:  # after every stage: a run cut short still leaves what it measured
        if args.out:
            write_result(args.out, throughput_result("serve_throughput", metrics, args, extra), echo=False)

    bw = copy_bandwidth()
    metrics["copy_bw_gb_s"] = bw / 1e9
    print(f"copy bandwidth {bw / 1e9:.0f} GB/s", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        d = build_model_dir(args.shape, Path(tmp) / "model", torch.bfloat16)
        vocab = SHAPES[args.shape]["vocab_size"]
        batch = prompts(args.requests, args.prompt_len, vocab)
        r1 = None if args.int4_only else ours(d, [[p] for p in batch[:5]], args.output_len,
                                              compare_sync=args.compare_sync)
        if r1 is not None:
            bs1_metrics(metrics, extra, args, r1, bw)
        save()
        if not args.skip_offline:
            r = ours(d, [batch], args.output_len, compare_sync=args.compare_sync, max_num_seqs=256,
                     max_num_batched_tokens=8192)
            metrics["offline_256_tok_s"] = r["tok_s"]
            if args.compare_sync:
                metrics["offline_256_sync_tok_s"] = r["sync_tok_s"]
            metrics["offline_256_ttft_p50_ms"] = r["ttft_p50_ms"]
            print("ours offline", r, flush=True)
            save()
        torch.cuda.empty_cache()
        if args.int4:
            q4 = quantized_copy(d, Path(tmp) / "int4", "int4", 128, lm_head="int4")
            gc.collect()
            r4 = ours(q4, [[p] for p in batch[:5]], args.output_len)
            metrics["int4_lmhead_int4_decode_bs1_tok_s"] = r4["tok_s"]
            metrics["int4_decode_bs1_ttft_p50_ms"] = r4["ttft_p50_ms"]
            if r1 is not None:
                metrics["int4_decode_bs1_vs_bf16"] = r4["tok_s"] / r1["tok_s"]
            extra["int4_bs1_graph"] = {"choice": r4["bs1_graph"], "replay_ms": r4["bs1_graph_ms"],
                                       "tiles_ms": r4["bs1_tiles_ms"]}
            print("ours int4 bs1", r4, flush=True)
            save()
            torch.cuda.empty_cache()
        if args.gpt_fast:
            for key, int4 in (("gptfast_decode_bs1_tok_s", False), ("gptfast_int4_decode_bs1_tok_s", True)):
                try:
                    g = gptfast_decode(Path(args.gpt_fast), SHAPES[args.shape], batch[0], args.output_len, int4=int4)
                except Exception as e:  # e.g. its int4 kernel missing on this GPU: report, keep the run
                    extra.setdefault("notes", []).append(f"gpt-fast {'int4' if int4 else 'bf16'} failed: "
                                                         f"{type(e).__name__}: {str(e)[:300]}")
                    print(extra["notes"][-1], flush=True)
                    continue
                metrics[key] = g["tok_s"]
                extra.setdefault("gptfast", {})["int4" if int4 else "bf16"] = g
                print("gpt-fast", "int4" if int4 else "bf16", g, flush=True)
                save()
            if "gptfast_decode_bs1_tok_s" in metrics:
                metrics["decode_bs1_vs_gptfast"] = metrics["decode_bs1_tok_s"] / metrics["gptfast_decode_bs1_tok_s"]
                if "offline_256_tok_s" in metrics:  # gpt-fast has no batching: its offline rate is its batch-1 rate
                    metrics["offline_256_vs_gptfast"] = metrics["offline_256_tok_s"] / metrics["gptfast_decode_bs1_tok_s"]
            if "gptfast_int4_decode_bs1_tok_s" in metrics and "int4_lmhead_int4_decode_bs1_tok_s" in metrics:
                metrics["int4_decode_bs1_vs_gptfast_int4"] = (metrics["int4_lmhead_int4_decode_bs1_tok_s"]
                                                              / metrics["gptfast_int4_decode_bs1_tok_s"])
            save()
        if not args.skip_hf:
            from transformers import AutoModelForCausalLM

            hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).cuda().eval()
            metrics["hf_decode_bs1_tok_s"] = hf_generate(hf, batch[:1], args.output_len)
            metrics["hf_decode_bs64_tok_s"] = hf_generate(hf, batch[:64], args.output_len)
            cb = hf_generate_batch(hf, batch, args.output_len)
            if cb is not None:
                metrics["hf_cb_offline_256_tok_s"] = cb
            print("hf", metrics, flush=True)
            save()
    if args.bandwidth_8b:
        bandwidth_8b(args, bw)
    print(json.dumps(throughput_result("serve_throughput", metrics, args, extra), indent=2))
    save()


if __name__ == "__main__":
    main()
