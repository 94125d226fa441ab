"""Data-parallel scaling of lmsmith's training step: per-GPU tokens/s on N GPUs vs 1 GPU.

Runs the loop's own step (`forward_backward` + `apply_update`) with the model prepared exactly as
`lmsmith train --nproc N` prepares it (fused loss -> activation checkpointing -> compile -> FSDP2/DDP),
once under torchrun with 1 process and once with N, on random tokens of a random-init model of the
given shape (no download). Efficiency = per-GPU tokens/s on N GPUs / tokens/s on 1 GPU.

    python -m bench.train.train_scaling --gpus 2 --preset llama-3.2-1b --batch-size 4 --seq-len 2048
    python -m bench.train.train_scaling --gpus 4 --preset llama-3.1-8b --batch-size 2 --ac full --no-single
    python -m bench.train.train_scaling --gpus 2 --preset tiny --device cpu --seq-len 64 --steps 2   # smoke test

Models larger than --meta-init-above parameters are created on the meta device and materialized
shard by shard (an 8B model never exists whole on one GPU or in host memory).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import ROOT, build_model, model_config


def materialize(model, device: torch.device, std: float = 0.02) -> None:
    """After sharding a meta-device model: allocate this rank's shards and initialize them (random
    weights, unit norms) and recompute the rotary-embedding buffers that meta creation left empty."""
    model.to_empty(device=device)
    with torch.no_grad():
        for _name, p in model.named_parameters():
            if p.ndim == 1:
                p.fill_(1.0)
            else:
                p.normal_(0.0, std)
        for m in model.modules():
            if hasattr(m, "inv_freq") and hasattr(m, "config"):
                with torch.device(device):
                    fresh = type(m)(config=m.config)
                m.inv_freq = fresh.inv_freq.to(device)
                if hasattr(m, "original_inv_freq"):
                    m.original_inv_freq = fresh.inv_freq.to(device)


def worker(args) -> None:
    """One rank of a torchrun job: time the training step and write rank 0's numbers to --worker-out."""
    from lmsmith.hardware import peak_flops
    from lmsmith.models import quiet_transformers
    from lmsmith.train import distributed as D
    from lmsmith.train.config import PretrainConfig
    from lmsmith.train.fused_loss import FusedCausalLMLoss
    from lmsmith.train.loop import apply_update, flops_per_token, forward_backward
    from lmsmith.train.model import build_optimizer
    from lmsmith.train.objectives import CausalLMLoss

    quiet_transformers()
    env = D.init_distributed(args.device)
    device = env.device
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    cfg = model_config(args.preset)
    n_params_est = cfg.num_hidden_layers * 12 * cfg.hidden_size**2 + cfg.vocab_size * cfg.hidden_size
    meta = n_params_est > args.meta_init_above and env.world > 1 and args.strategy == "fsdp"
    model = build_model(cfg, device, meta, args.attn)
    from lmsmith.train.attention import use_causal_attention

    use_causal_attention(model)  # as lmsmith train does (mask-free causal SDPA)
    strategy = args.strategy if env.world > 1 else "none"
    on_gpu = device.type == "cuda"  # the loop's defaults: compile and fused loss on for CUDA
    args.compile = on_gpu if args.compile is None else args.compile
    args.fused_loss = on_gpu if args.fused_loss is None else args.fused_loss
    model, head = D.prepare_model(model, env, strategy=strategy, ac=args.ac, compile=args.compile,
                                  fused_loss=args.fused_loss, reshard_after_forward=args.reshard_after_forward)
    if meta:
        materialize(model, device)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    tcfg = PretrainConfig(model="bench", lr=1e-4, warmup_steps=0)
    opt, sched = build_optimizer(model, tcfg, args.steps + args.warmup, device)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext
    objective = FusedCausalLMLoss(head) if head is not None else CausalLMLoss()
    gen = torch.Generator(device="cpu").manual_seed(1000 + env.rank)

    def batch():
        ids = torch.randint(0, cfg.vocab_size, (args.batch_size, args.seq_len), generator=gen)
        return {"input_ids": ids, "labels": ids}

    def step():
        forward_backward(model, objective, [batch()], device, amp, 1.0, env)
        apply_update(opt, sched)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    sync(device)
    D.barrier(env)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    sec = time.perf_counter() - t
    sec = D.all_reduce_sum(env, [sec])[0] / env.world
    tps = args.batch_size * args.seq_len * args.steps / sec  # per GPU
    peak = peak_flops(device) if not args.peak_tflops else args.peak_tflops * 1e12
    fpt = flops_per_token(D.unwrap(model), n_params, args.seq_len)
    mem = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    mem = D.all_reduce_sum(env, [mem])[0] / env.world
    out = {"gpus": env.world, "tokens_per_s_per_gpu": tps, "seconds_per_step": sec / args.steps,
           "mfu": (fpt * tps / peak) if peak else 0.0, "peak_mem_gib": mem, "params": n_params,
           "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
           "strategy": strategy}
    if env.is_main and args.worker_out:
        Path(args.worker_out).write_text(json.dumps(out))
    D.shutdown(env)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def launch(n: int, argv: list[str], timeout: int) -> dict:
    from lmsmith.train.launch import worker_env

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n),
               "-m", "bench.train.train_scaling", *argv, "--worker-out", str(out)]  # from the repository root
        print(f"running on {n} process(es): {shlex.join(cmd)}", file=sys.stderr, flush=True)
        rc = subprocess.run(cmd, env=worker_env(n), timeout=timeout).returncode
        if rc != 0 or not out.is_file():
            return {"failed": 1.0, "gpus": n}
        return json.loads(out.read_text())


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gpus", type=int, default=2, help="processes of the scaled run (one per GPU)")
    p.add_argument("--preset", default="llama-3.2-1b", help="tiny or a `lmsmith plan` shape, e.g. llama-3.1-8b")
    p.add_argument("--device", default="auto", help="auto, cuda or cpu (gloo; for a smoke test)")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=4, help="sequences per GPU per step")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--strategy", choices=["fsdp", "ddp"], default="fsdp")
    p.add_argument("--reshard-after-forward", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--ac", choices=["none", "selective", "full"], default="none")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="per-block torch.compile (default: the loop's: on for CUDA)")
    p.add_argument("--fused-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="chunked lm_head + cross-entropy (default: the loop's: on for CUDA)")
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--no-single", action="store_true", help="skip the 1-GPU run (a model that does not fit one GPU)")
    p.add_argument("--meta-init-above", type=float, default=4e9, help="parameters above which to init on meta")
    p.add_argument("--peak-tflops", type=float, default=None)
    p.add_argument("--timeout", type=int, default=1800)
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    p.add_argument("--worker-out", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if "LOCAL_RANK" in os.environ:  # we are a torchrun worker
        worker(args)
        return 0
    raw = list(sys.argv[1:] if argv is None else argv)
    scaled = launch(args.gpus, raw, args.timeout)
    single = {} if args.no_single else launch(1, raw, args.timeout)
    metrics = {"gpus": args.gpus, "batch_size_per_gpu": args.batch_size, "seq_len": args.seq_len,
               "per_gpu_tokens_per_s": scaled.get("tokens_per_s_per_gpu", 0.0),
               "total_tokens_per_s": scaled.get("tokens_per_s_per_gpu", 0.0) * args.gpus,
               "single_gpu_tokens_per_s": single.get("tokens_per_s_per_gpu", 0.0),
               "mfu": scaled.get("mfu", 0.0), "single_gpu_mfu": single.get("mfu", 0.0),
               "peak_mem_gib": scaled.get("peak_mem_gib", 0.0), "single_gpu_peak_mem_gib": single.get("peak_mem_gib", 0.0),
               "params": scaled.get("params", 0), "failed": scaled.get("failed", 0.0) + single.get("failed", 0.0)}
    metrics["efficiency"] = (metrics["per_gpu_tokens_per_s"] / metrics["single_gpu_tokens_per_s"]
                             if metrics["single_gpu_tokens_per_s"] else 0.0)
    result = make_result("train_scaling", metrics, scaled.get("device", "?"), raw, preset=args.preset,
                         strategy=args.strategy, ac=args.ac, compile=args.compile, fused_loss=args.fused_loss)
    tag = "cuda" if scaled.get("device", "cpu") != "cpu" else "cpu"
    write_result(Path(args.out) / f"train_scaling-{args.preset}-{args.gpus}x-{args.strategy}-{tag}.json", result)
    return 0 if not metrics["failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
