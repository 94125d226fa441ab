"""Synthetic data throughput: the same `synth backtranslate` job through three backends, in one process.

    python -m bench.data.synth [--model smollm2-135m-instruct] [--records 40] [--max-tokens 64] [--concurrency 16]
                          [--device cpu|cuda] [--skip-hf] [--hf-records N] [--random-init-from DIR]

1. engine: the in-process engine backend (`lmsmith.serve.synth_backend.EngineBackend`), every chunk's
   requests batched together (continuous batching);
2. http: the same prompts sent to `lmsmith serve` (our server, started here in the background on loopback)
   through the shared endpoint client with `--concurrency` requests in flight;
3. hf: transformers `generate` called once per record, in a loop (what a hand-written script does).

Same prompts (the 20 Czech texts shipped in lmsmith/assets/synth, repeated with new ids up to --records),
same seeded sampling and token limit, no call cache. `--random-init-from DIR` benchmarks a random-init model
with DIR's config and tokenizer (the GPU machine has no weights to download; every answer then runs to
--max-tokens, which makes the three backends produce the same number of tokens). Reports records/s and output tokens/s per backend and
writes bench/results/synth_<device>.json ({"benchmark": "synth", ..., "metrics": {...}}).
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import RESULTS


class HFLoopBackend:
    """transformers `generate`, one prompt at a time: the baseline a script would write."""

    backend_id = "hf-loop"

    def __init__(self, ref: str, device: str):
        from lmsmith.models import load_model, load_tokenizer

        self.model_obj = load_model(ref, dtype="auto", device=device)
        self.tok = load_tokenizer(ref)
        self.device, self.model = device, ref

    def run(self, requests, on_reply) -> None:
        from lmsmith.data.synth.backends import Reply

        for i, req in enumerate(requests):
            s = req.sampling
            ids = self.tok.apply_chat_template(req.messages, add_generation_prompt=True, return_tensors="pt",
                                               return_dict=True)["input_ids"].to(self.device)
            torch.manual_seed(s.seed)
            kw = dict(do_sample=True, temperature=s.temperature, top_p=s.top_p, top_k=0) if s.temperature > 0 else \
                dict(do_sample=False)
            with torch.inference_mode():
                out = self.model_obj.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=s.max_tokens,
                                              pad_token_id=self.tok.pad_token_id or self.tok.eos_token_id, **kw)
            new = out[0, ids.shape[1]:]
            text = self.tok.decode(new, skip_special_tokens=True)
            finish = "length" if len(new) >= s.max_tokens else "stop"
            on_reply(i, Reply(text, finish, int(ids.shape[1]), int(len(new))))

    def close(self) -> None:
        pass


def items(n: int):
    from importlib.resources import files

    from lmsmith.data.synth.runner import Item

    texts = [json.loads(line) for line in (files("lmsmith") / "assets/synth/cs_texts.jsonl").read_text("utf-8").splitlines()]
    return [Item(f"{texts[i % len(texts)]['id']}-{i // len(texts)}", {"text": texts[i % len(texts)]["text"]})
            for i in range(n)]


def run_one(name: str, backend, args, work: Path) -> dict[str, float]:
    from lmsmith.data.synth.cache import CallCache
    from lmsmith.data.synth.generators import Backtranslate, SamplingOptions
    from lmsmith.data.synth.runner import Caller, run_chunks

    gen = Backtranslate(sampling=SamplingOptions(temperature=0.7, max_tokens=args.max_tokens, seed=0), language="cs")
    recs = items(args.records)
    caller = Caller(backend, CallCache(None))
    t = time.perf_counter()
    res = run_chunks(gen, recs, work / f"{name}.jsonl", caller, chunk_size=args.chunk_size, progress=False)
    dt = time.perf_counter() - t
    c = caller.counters
    m = {f"{name}_seconds": round(dt, 3), f"{name}_records_per_s": round(len(recs) / dt, 4),
         f"{name}_output_tok_per_s": round(c.completion_tokens / dt, 2), f"{name}_output_tokens": c.completion_tokens,
         f"{name}_records_kept": len(res.records), f"{name}_failed_calls": c.failed}
    print(f"{name:6s} {len(recs) / dt:7.3f} records/s  {c.completion_tokens / dt:8.1f} output tok/s  "
          f"({c.completion_tokens} tokens, {dt:.1f} s, kept {len(res.records)}/{len(recs)})", flush=True)
    return m


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct", help="model ref (the default model is pulled if missing)")
    ap.add_argument("--records", type=int, default=40)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--concurrency", type=int, default=16, help="HTTP requests in flight")
    ap.add_argument("--chunk-size", type=int, default=64)
    ap.add_argument("--max-num-seqs", type=int, default=64)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--skip-hf", action="store_true")
    ap.add_argument("--hf-records", type=int, help="records for the (slow) HF loop (default: --records)")
    ap.add_argument("--random-init-from", help="model dir whose config + tokenizer get random bf16 weights")
    ap.add_argument("--out", help="result file (default: bench/results/synth_<device>.json)")
    args = ap.parse_args()

    import tempfile

    from lmsmith.models import quiet_transformers

    quiet_transformers()
    tmpdir = tempfile.TemporaryDirectory()
    if args.random_init_from:
        args.model = random_init(Path(args.random_init_from), Path(tmpdir.name) / "model", args.device)
    elif args.model == "smollm2-135m-instruct":
        from lmsmith.registry.importers import pull_default

        pull_default()
    from lmsmith.data.synth.backends import EndpointBackend
    from lmsmith.serve.engine import Engine
    from lmsmith.serve.server import BackgroundServer, create_app
    from lmsmith.serve.synth_backend import EngineBackend

    metrics: dict[str, float | int] = {"records": args.records, "max_tokens": args.max_tokens,
                                       "http_concurrency": args.concurrency}
    tag = "cpu" if args.device == "cpu" else torch.cuda.get_device_name().split()[-1].lower()
    out = Path(args.out or RESULTS / f"synth_{tag}.json")
    label = f"random-init {Path(args.random_init_from).name}" if args.random_init_from else args.model

    def save() -> None:  # after every backend, so a run cut short still leaves what it measured
        kept = {k: v for k, v in metrics.items() if not k.startswith(("warmup", "hfwarm"))}
        write_result(out, make_result("synth", kept, device=args.device, model=label), echo=False)

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        engine_be = EngineBackend(args.model, device=args.device, max_num_seqs=args.max_num_seqs)
        run_one("warmup", engine_be, argparse.Namespace(**{**vars(args), "records": 4}), work)
        metrics.update(run_one("engine", engine_be, args, work))
        save()
        engine_be.close()
        del engine_be
        gc.collect()

        engine = Engine(args.model, device=args.device, max_num_seqs=args.max_num_seqs)
        with BackgroundServer(create_app(engine, args.model, max_num_seqs=args.max_num_seqs)) as srv:
            http_be = EndpointBackend(srv.url, args.model, concurrency=args.concurrency, timeout=600)
            run_one("warmup", http_be, argparse.Namespace(**{**vars(args), "records": 2}), work)
            metrics.update(run_one("http", http_be, args, work))
            http_be.close()
        metrics["engine_vs_http_records"] = round(metrics["engine_records_per_s"] / metrics["http_records_per_s"], 2)
        save()
        del engine
        gc.collect()

        if not args.skip_hf:
            hf = HFLoopBackend(args.model, args.device)
            run_one("hfwarm", hf, argparse.Namespace(**{**vars(args), "records": 1}), work)
            metrics.update(run_one("hf", hf, argparse.Namespace(**{**vars(args), "records": args.hf_records or args.records}), work))
            metrics["hf_records"] = args.hf_records or args.records
            metrics["engine_vs_hf_records"] = round(metrics["engine_records_per_s"] / metrics["hf_records_per_s"], 2)
            metrics["http_vs_hf_records"] = round(metrics["http_records_per_s"] / metrics["hf_records_per_s"], 2)
            save()
    tmpdir.cleanup()
    print(json.dumps({k: v for k, v in metrics.items() if not k.startswith(("warmup", "hfwarm"))}, indent=2))
    print(f"wrote {out}", file=sys.stderr)
    return 0


def random_init(src: Path, dest: Path, device: str) -> str:
    """DIR's config, tokenizer and chat template with random weights (bf16 on GPU, fp32 on CPU)."""
    import shutil

    from transformers import AutoConfig, AutoModelForCausalLM

    dest.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja", "special_tokens_map.json"):
        if (src / name).is_file():
            shutil.copy(src / name, dest / name)
    cfg = AutoConfig.from_pretrained(src)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(cfg, torch_dtype=torch.bfloat16 if device != "cpu" else torch.float32)
    model.save_pretrained(dest, safe_serialization=True)
    return str(dest)


if __name__ == "__main__":
    sys.exit(main())
