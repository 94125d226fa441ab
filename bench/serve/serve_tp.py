"""Tensor-parallel serving: one GPU vs two on the Llama-3.1-8B shape, and the 70B shape that needs two H200s.

Random weights are made directly on each GPU shard (`load_format="dummy"`: no checkpoint, never the whole model
on the host). Each configuration runs in its own process (a clean GPU and process group each time) with a time
limit, so one failing configuration still leaves the others' numbers. Workloads (EOS ignored):
  decode batch 1: 128-token prompt, 128 new tokens (median of 3);
  offline: 256 requests x (128 in, 256 out) through the continuous-batching engine.

    python -m bench.serve.serve_tp --out bench/results/serve_tp-h200x2.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench._result import make_result
from bench._result import write_result as save_result

CONFIGS = {  # name: (shape, tensor parallel size, time limit in seconds, extra environment)
    "8b_tp1": ("llama-3.1-8b", 1, 140, {}),
    "8b_tp2": ("llama-3.1-8b", 2, 110, {}),
    "70b_tp2": ("llama-3.1-70b", 2, 160, {}),
    "8b_tp2_overlap": ("llama-3.1-8b", 2, 100, {"LMSMITH_TP_OVERLAP": "1"}),  # opt-in overlapped decoding
    "tiny_tp1": ("tiny", 1, 120, {}),  # CPU smoke test of this script: --configs tiny_tp1,tiny_tp2 --requests 8
    "tiny_tp2": ("tiny", 2, 120, {}),
}
GPU_CONFIGS = "8b_tp1,8b_tp2,70b_tp2,8b_tp2_overlap"
TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1000)


def write_model_dir(shape: str, dest: Path) -> Path:
    """config.json + a word-level tokenizer covering the vocabulary; no weights (they are made on the GPUs)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import AutoConfig, PreTrainedTokenizerFast

    from lmsmith.ops.planner import SHAPES

    cfg = AutoConfig.for_model("llama", **(TINY if shape == "tiny" else SHAPES[shape]), max_position_embeddings=8192, rope_theta=500000.0,
                               bos_token_id=1, eos_token_id=2, rms_norm_eps=1e-5)
    dest.mkdir(parents=True, exist_ok=True)
    cfg.save_pretrained(dest)
    tk = Tokenizer(models.WordLevel({f"t{i}": i for i in range(cfg.vocab_size)}, unk_token="t0"))
    tk.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tk, eos_token="t2", bos_token="t1", pad_token="t2",
                            unk_token="t0").save_pretrained(dest)
    return dest


def weight_bytes(model) -> int:
    """Bytes of one rank's weights: parameters plus the fused q/k/v and gate/up tensors (plain attributes)."""
    import torch

    seen, total = set(), 0
    tensors = list(model.parameters()) + list(model.buffers())
    for m in model.modules():
        tensors += [v for v in vars(m).values() if isinstance(v, torch.Tensor)]
    for t in tensors:
        if t.data_ptr() not in seen and t.device.type != "meta":
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    return total


def prompts(n: int, length: int, vocab: int, seed: int) -> list[list[int]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    return torch.randint(10, vocab, (n, length), generator=g).tolist()


def run_one(name: str, prompt_len: int, requests: int, out: Path) -> None:
    """One configuration, in this process: load, warm up, time bs1 decode and the offline batch."""
    import torch

    from lmsmith.serve import LLM, SamplingParams

    shape, tp, _, _ = CONFIGS[name]
    res: dict = {"config": name, "shape": shape, "tensor_parallel_size": tp}
    with tempfile.TemporaryDirectory() as tmp:
        d = write_model_dir(shape, Path(tmp) / "model")
        t = time.perf_counter()
        cuda = torch.cuda.is_available()
        llm = LLM(str(d), dtype="bfloat16" if cuda else "float32", load_format="dummy", tensor_parallel_size=tp, max_num_seqs=256,
                  max_num_batched_tokens=8192, max_model_len=1024)
        res["load_s"] = time.perf_counter() - t
        runner = llm.engine.runner
        local = getattr(runner, "local", runner)
        res["weights_gib_per_gpu"] = weight_bytes(local.model) / 2**30
        res["kv_cache_gib_per_gpu"] = local.kv_cache.numel() * local.kv_cache.element_size() / 2**30
        res["cuda_graphs"] = local.graphs is not None
        res["overlapped_decode"] = bool(getattr(llm.engine, "async_scheduling", False))
        res["bs1_step"] = getattr(local.graphs, "bs1_choice", None) if local.graphs is not None else None
        if cuda:
            res["gpu0_allocated_gib"] = torch.cuda.memory_allocated(0) / 2**30
        vocab = llm.engine.vocab_size
        out.write_text(json.dumps(res))  # partial results survive a later failure
        sp1 = SamplingParams(max_tokens=128, temperature=0.0, ignore_eos=True)
        llm.generate(prompts(1, prompt_len, vocab, 1), SamplingParams(max_tokens=8, ignore_eos=True), use_tqdm=False)
        rates = []
        for i in range(3):
            t = time.perf_counter()
            r = llm.generate(prompts(1, prompt_len, vocab, 10 + i), sp1, use_tqdm=False)
            rates.append(len(r[0].outputs[0].token_ids) / (time.perf_counter() - t))
        res["decode_bs1_tok_s"] = statistics.median(rates)
        out.write_text(json.dumps(res))
        spo = SamplingParams(max_tokens=256, temperature=0.0, ignore_eos=True)
        # the workload's shapes once (prefill batches, every graph bucket), 2 tokens each
        llm.generate(prompts(requests, prompt_len, vocab, 7), SamplingParams(max_tokens=2, ignore_eos=True),
                     use_tqdm=False)
        t = time.perf_counter()
        r = llm.generate(prompts(requests, prompt_len, vocab, 0), spo, use_tqdm=False)
        dt = time.perf_counter() - t
        res["offline_tok_s"] = sum(len(o.outputs[0].token_ids) for o in r) / dt
        res["offline_ttft_p50_ms"] = 1000 * statistics.median(x.ttft for x in r if x.ttft is not None)
        out.write_text(json.dumps(res))
        llm.close()


def _nccl_version() -> str:
    import torch

    try:
        v = torch.cuda.nccl.version()
        return ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
    except Exception:  # noqa: BLE001 - informational only
        return "unknown"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default=GPU_CONFIGS, help=f"comma-separated subset of {', '.join(CONFIGS)}")
    ap.add_argument("--prompt-len", type=int, default=128)
    ap.add_argument("--requests", type=int, default=256)
    ap.add_argument("--out", default=None, help="result JSON (default: print only)")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration in this process
    ap.add_argument("--one-out", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        run_one(args.one, args.prompt_len, args.requests, Path(args.one_out))
        return
    import torch

    names = args.configs.split(",")
    cpu_smoke = all(CONFIGS[n][0] == "tiny" for n in names)
    assert cpu_smoke or torch.cuda.is_available(), "needs CUDA (or --configs tiny_tp1,tiny_tp2 for a CPU smoke run)"
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    ngpu = torch.cuda.device_count() if torch.cuda.is_available() else 0
    metrics: dict[str, float] = {}
    details: dict[str, dict] = {}
    for name in names:
        shape, tp, limit, env = CONFIGS[name]
        if tp > ngpu and not cpu_smoke:
            print(f"skip {name}: needs {tp} GPUs, {ngpu} visible", flush=True)
            continue
        with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
            part = Path(f.name)
        cmd = [sys.executable, "-m", "bench.serve.serve_tp", "--one", name, "--one-out", str(part), "--prompt-len", str(args.prompt_len),
               "--requests", str(args.requests)]
        t = time.perf_counter()
        try:
            rc = subprocess.run(cmd, timeout=limit, env={**os.environ, **env}).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
        res = json.loads(part.read_text()) if part.stat().st_size else {}
        part.unlink()
        res["status"] = "ok" if rc == 0 else f"failed ({rc})"
        res["wall_s"] = time.perf_counter() - t
        details[name] = res
        print(name, json.dumps(res), flush=True)
        for k in ("decode_bs1_tok_s", "offline_tok_s", "offline_ttft_p50_ms", "weights_gib_per_gpu",
                  "kv_cache_gib_per_gpu", "load_s"):
            if k in res:
                metrics[f"{name}_{k}"] = res[k]
        if "cuda_graphs" in res:
            metrics[f"{name}_cuda_graphs"] = float(res["cuda_graphs"])
        write_result(args, ngpu, metrics, details)  # after every configuration: a later kill keeps these
    write_result(args, ngpu, metrics, details, final=True)


def write_result(args, ngpu: int, metrics: dict, details: dict, final: bool = False) -> None:
    import torch

    metrics = dict(metrics)
    for a, b in (("8b_tp2", "8b_tp1"), ("8b_tp2_overlap", "8b_tp1"), ("tiny_tp2", "tiny_tp1")):
        for k in ("decode_bs1_tok_s", "offline_tok_s"):
            if f"{a}_{k}" in metrics and f"{b}_{k}" in metrics:
                metrics[f"{a}_vs_tp1_{k.replace('_tok_s', '')}_speedup"] = metrics[f"{a}_{k}"] / metrics[f"{b}_{k}"]
    result = make_result(
        "serve_tp", {k: round(v, 3) for k, v in metrics.items()},
        f"{ngpu}x {torch.cuda.get_device_name()}" if ngpu else "cpu",
        workload={"prompt_len": args.prompt_len, "decode_bs1_output_len": 128, "offline_requests": args.requests,
                     "offline_output_len": 256, "dtype": "bfloat16" if ngpu else "float32",
                  "weights": "random, made on each GPU shard", "max_model_len": 1024},
        configs=details)
    result["versions"]["nccl"] = _nccl_version()
    if final:
        print(json.dumps(result, indent=2), flush=True)
    if args.out:
        save_result(args.out, result, echo=False)


if __name__ == "__main__":
    main()
