"""GPU serving throughput: our engine vs HF transformers on a random-init model of a real shape.

Workloads (fixed output lengths, EOS ignored) match the baselines in DEVELOPERS.md:
  decode batch 1 (128 in, 256 out); HF `generate` batch 64; 256 requests x (128 in, 256 out) offline,
  ours through the continuous-batching engine and HF's through `generate_batch` when it exists.

    python -m bench.serve.serve_gpu --shape llama-3.2-1b --out bench/results/serve_throughput-h100.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import build_model_dir, ours, prompts
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--shape", default="llama-3.2-1b", choices=sorted(SHAPES))
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--skip-offline", action="store_true", help="batch-1 decode only")
    ap.add_argument("--compare-sync", action="store_true", help="also time ours with the overlapped decode loop off")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    assert torch.cuda.is_available(), "needs CUDA"

    metrics: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        d = build_model_dir(args.shape, Path(tmp) / "model", torch.bfloat16)
        vocab = SHAPES[args.shape]["vocab_size"]
        batch = prompts(args.requests, args.prompt_len, vocab)
        r1 = ours(d, [[p] for p in batch[:5]], args.output_len, compare_sync=args.compare_sync)
        bs1_graph = {"choice": r1["bs1_graph"], "replay_ms": r1["bs1_graph_ms"], "tiles_ms": r1["bs1_tiles_ms"]}
        metrics["decode_bs1_tok_s"] = r1["tok_s"]
        metrics["decode_bs1_ttft_p50_ms"] = r1["ttft_p50_ms"]
        if args.compare_sync:
            metrics["decode_bs1_sync_tok_s"] = r1["sync_tok_s"]
        print("ours bs1", r1, flush=True)
        if not args.skip_offline:
            r = ours(d, [batch], args.output_len, compare_sync=args.compare_sync, max_num_seqs=256,
                     max_num_batched_tokens=8192)
            metrics["offline_256_tok_s"] = r["tok_s"]
            if args.compare_sync:
                metrics["offline_256_sync_tok_s"] = r["sync_tok_s"]
            metrics["offline_256_ttft_p50_ms"] = r["ttft_p50_ms"]
            print("ours offline", r, flush=True)
        torch.cuda.empty_cache()
        if not args.skip_hf:
            from transformers import AutoModelForCausalLM

            hf = AutoModelForCausalLM.from_pretrained(d, dtype=torch.bfloat16).cuda().eval()
            metrics["hf_decode_bs1_tok_s"] = hf_generate(hf, batch[:1], args.output_len)
            metrics["hf_decode_bs64_tok_s"] = hf_generate(hf, batch[:64], args.output_len)
            cb = hf_generate_batch(hf, batch, args.output_len)
            if cb is not None:
                metrics["hf_cb_offline_256_tok_s"] = cb
            print("hf", metrics, flush=True)
    result = make_result(
        "serve_throughput", {k: round(v, 2) for k, v in metrics.items()}, device=torch.device("cuda"),
        workload={"shape": args.shape, "prompt_len": args.prompt_len, "output_len": args.output_len,
                  "requests": args.requests, "dtype": "bfloat16", "weights": "random init"},
        bs1_graph=bs1_graph)
    print(json.dumps(result, indent=2))
    if args.out:
        write_result(args.out, result, echo=False)


if __name__ == "__main__":
    main()
