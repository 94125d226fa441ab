"""Engine vs transformers on CPU: 16 concurrent requests through our engine against the same 16 prompts run
one after another with transformers' `generate` (greedy, fixed output length via ignore_eos / min_new_tokens).

    python -m bench.serve.serve_cpu_concurrency [--model smollm2-135m-instruct] [--requests 16] [--output-len 64]

Writes bench/results/serve_cpu_concurrency.json ({"benchmark": "serve_cpu_concurrency", ..., "metrics": {...}}).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from bench._result import make_result, write_result
from bench.common import RESULTS

QUESTIONS = [
    "What is the capital of France?", "Explain photosynthesis in one sentence.", "Name three colors.",
    "Write a haiku about the sea.", "What is 12 times 7?", "Translate 'good morning' to Czech.",
    "Why is the sky blue?", "Give me a tip for learning Polish.", "What is a neural network?",
    "Describe Ljubljana briefly.", "List two prime numbers.", "What does a compiler do?",
    "Suggest a name for a cat.", "How many legs does a spider have?", "What is the boiling point of water?",
    "Summarize the plot of Hamlet in one sentence.",
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model ref (the default model is pulled if missing)")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=64)
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, help="torch CPU threads for both sides (default: torch's choice)")
    ap.add_argument("--out", default=str(RESULTS / "serve_cpu_concurrency.json"))
    args = ap.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    from lmsmith.models import quiet_transformers, resolve

    quiet_transformers()
    if args.model == "smollm2-135m-instruct":
        from lmsmith.registry.importers import pull_default

        pull_default()
    from transformers import AutoModelForCausalLM

    from lmsmith.serve import SamplingParams
    from lmsmith.serve.engine import Engine

    engine = Engine(args.model, dtype=args.dtype, device="cpu", max_num_seqs=args.requests)
    tok = engine.tokenizer
    prompts = [list(tok.apply_chat_template([{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}],
                                            add_generation_prompt=True, tokenize=True, return_dict=True)["input_ids"])
               for i in range(args.requests)]

    def run_engine(ps, n_tokens):
        p = SamplingParams(max_tokens=n_tokens, temperature=0.0, ignore_eos=True)
        t0 = time.perf_counter()
        for i, ids in enumerate(ps):
            engine.add_request(f"b{time.time_ns()}-{i}", ids, p)
        ttft: list[float] = []
        first: set = set()
        produced = 0
        while engine.has_unfinished():
            for o in engine.step():
                produced += len(o.new_token_ids)
                if o.request_id not in first:
                    first.add(o.request_id)
                    ttft.append(time.perf_counter() - t0)
        return time.perf_counter() - t0, produced, ttft

    run_engine(prompts[:2], 4)  # warm-up
    engine_s, engine_tokens, ttfts = run_engine(prompts, args.output_len)

    hf = AutoModelForCausalLM.from_pretrained(resolve(args.model).dir, dtype=getattr(torch, args.dtype)).eval()
    with torch.inference_mode():
        hf.generate(torch.tensor([prompts[0]]), max_new_tokens=4, min_new_tokens=4, do_sample=False)  # warm-up
        t0 = time.perf_counter()
        hf_tokens = 0
        for ids in prompts:
            out = hf.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                              max_new_tokens=args.output_len, min_new_tokens=args.output_len, do_sample=False,
                              pad_token_id=tok.pad_token_id)
            hf_tokens += out.shape[1] - len(ids)
        hf_s = time.perf_counter() - t0


    metrics = {
        "requests": args.requests, "output_len": args.output_len,
        "mean_prompt_len": statistics.mean(len(p) for p in prompts),
        "engine_wall_s": round(engine_s, 3), "engine_output_tokens": engine_tokens,
        "engine_output_tok_s": round(engine_tokens / engine_s, 2),
        "engine_ttft_p50_s": round(statistics.median(ttfts), 3), "engine_ttft_max_s": round(max(ttfts), 3),
        "hf_sequential_wall_s": round(hf_s, 3), "hf_sequential_output_tokens": hf_tokens,
        "hf_sequential_output_tok_s": round(hf_tokens / hf_s, 2),
        "speedup": round((engine_tokens / engine_s) / (hf_tokens / hf_s), 2),
        "torch_threads": torch.get_num_threads(),
    }
    write_result(args.out, make_result("serve_cpu_concurrency", metrics, "cpu", model=args.model, dtype=args.dtype))
    return 0


if __name__ == "__main__":
    sys.exit(main())
