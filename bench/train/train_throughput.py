"""Training throughput of lmsmith's loop for a model shape: tokens/s, MFU and peak memory (CUDA).

Builds a random-init model of the shape (no download), runs warmup + timed optimizer steps of the same
step function `lmsmith train` uses (full fine-tuning and/or LoRA), and with `--baseline` the same shapes
through a plain Hugging Face loop (model(labels=...) + torch AdamW). Writes a JSON result into
bench/results/.

    python -m bench.train.train_throughput --preset tiny --device cpu --seq-len 128 --batch-size 2 --steps 3
    python -m bench.train.train_throughput --preset llama-3.2-1b --baseline      # on an H100: bf16, seq 2048, batch 8
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import ROOT

PRESETS = {
    "llama-3.2-1b": dict(model_type="llama", hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, intermediate_size=8192, vocab_size=128256, tie_word_embeddings=True,
                         rope_theta=500000.0, max_position_embeddings=131072, rms_norm_eps=1e-5),
    "tiny": dict(model_type="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                 intermediate_size=128, vocab_size=512, tie_word_embeddings=False, max_position_embeddings=4096),
}


def build(preset: str, device: torch.device, attn: str):
    from transformers import AutoConfig, AutoModelForCausalLM

    spec = dict(PRESETS[preset])
    cfg = AutoConfig.for_model(spec.pop("model_type"), **spec)
    cfg.use_cache = False
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32, attn_implementation=attn)
    return model


def lmsmith_run(args, mode: str, device: torch.device) -> dict[str, float]:
    """Exactly what `lmsmith train` runs: the loop's prepare_model (fused head, activation checkpointing,
    per-block compile), its optimizer, autocast + SDPA kernel choice, and its step function."""
    from lmsmith.train import distributed as D
    from lmsmith.train import master_weights
    from lmsmith.train.attention import resolve_sdpa_backend, sdpa_context, use_causal_attention
    from lmsmith.train.config import PretrainConfig
    from lmsmith.train.fused_loss import FusedCausalLMLoss
    from lmsmith.train.loop import apply_update, flops_per_token, forward_backward
    from lmsmith.train.model import apply_lora, build_optimizer
    from lmsmith.train.objectives import CausalLMLoss

    model = build(args.preset, device, args.attn)
    model.config.use_cache = False
    use_causal_attention(model)  # as build_model does: mask-free causal SDPA (only from --attn sdpa)
    cfg = PretrainConfig(model="bench", lr=1e-4, warmup_steps=0, lora_r=args.lora_r if mode == "lora" else None,
                         lora_dropout=args.lora_dropout, gradient_checkpointing=args.gradient_checkpointing,
                         ac=args.ac, compile=args.compile, fused_loss=args.fused_loss, sdpa_backend=args.sdpa_backend)
    if mode == "lora":
        model = apply_lora(model, cfg, device).to(device)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if mode == "lora":
            model.enable_input_require_grads()
    use_compile, use_fused = cfg.speed_defaults(device.type)
    model, head = D.prepare_model(model, D.DistEnv(device=device), ac=args.ac, compile=use_compile,
                                  fused_loss=use_fused, hf_gradient_checkpointing=args.gradient_checkpointing)
    if head is not None and args.loss_chunk:
        head.chunk_size = args.loss_chunk
    model.train()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    master = master_weights.applies(cfg.master_weights, device=device,
                                    compute_dtype=torch.bfloat16 if args.dtype == "bf16" else None,
                                    full=mode != "lora", world=1, grad_accum=1, qat=False, lm_task=True)
    opt, sched = build_optimizer(model, cfg, args.steps + args.warmup, device, master=master)
    sdpa = sdpa_context(resolve_sdpa_backend(args.sdpa_backend, device))

    @contextmanager
    def amp():
        with (torch.autocast(device.type, dtype=torch.bfloat16) if args.dtype == "bf16" else nullcontext()), sdpa():
            yield

    objective = FusedCausalLMLoss(head) if head is not None else CausalLMLoss()
    vocab = PRESETS[args.preset]["vocab_size"]
    g = torch.Generator().manual_seed(0)

    def batch():  # a CPU batch, as the loader hands it out (pinned on CUDA)
        ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), generator=g)
        if device.type == "cuda":
            ids = ids.pin_memory()
        return {"input_ids": ids, "labels": ids}

    def step():
        forward_backward(model, objective, [batch()], device, amp, 1.0, optimizer=opt if args.fused_clip else None)
        apply_update(opt, sched)

    result = timed(step, args, device)
    result.update(compile=float(use_compile), fused_loss=float(use_fused), master_weights=float(master))
    if device.type == "cuda":  # what `lmsmith plan train` predicts for these options
        from lmsmith.ops.planner import Shape, plan_train

        plan = plan_train(Shape.from_config(PRESETS[args.preset]),
                          seq_len=args.seq_len, micro_batch=args.batch_size, strategy="single", lora=mode == "lora",
                          lora_r=args.lora_r, ac=args.ac, chunked_loss=use_fused, compile=use_compile,
                          master_weights=master)
        result["planned_gib"] = plan.total_gib
    fpt = flops_per_token(D.unwrap(model), n_trainable, args.seq_len)
    out = finish(result, args, device, fpt, n_trainable)
    if "planned_gib" in out and out.get("peak_mem_gib"):
        out["plan_error_pct"] = 100 * (out["planned_gib"] - out["peak_mem_gib"]) / out["peak_mem_gib"]
    if args.profile and device.type == "cuda":
        try:
            profile_steps(step, args, device, mode)
        except Exception as e:  # a profiler problem must not lose the measurement
            print(f"profile failed: {type(e).__name__}: {e}", file=sys.stderr)
    return out


def hf_run(args, mode: str, device: torch.device) -> dict[str, float]:
    """The plain Hugging Face way: model(input_ids, labels=...).loss, torch AdamW (fused on CUDA)."""
    from lmsmith.train.loop import flops_per_token

    model = build(args.preset, device, args.attn)
    if mode == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=args.lora_r, lora_alpha=2 * args.lora_r, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"))
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if mode == "lora":
            model.enable_input_require_grads()
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=device.type == "cuda")
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bf16" else nullcontext
    vocab = PRESETS[args.preset]["vocab_size"]

    def step():
        ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), device=device)
        with amp():
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    result = timed(step, args, device)
    return finish(result, args, device, flops_per_token(model, sum(p.numel() for p in params), args.seq_len),
                  sum(p.numel() for p in params))


def timed(step, args, device: torch.device) -> dict[str, float]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    sync(device)
    t = time.perf_counter()
    for _ in range(args.steps):
        step()
    sync(device)
    return {"seconds_per_step": (time.perf_counter() - t) / args.steps}


def finish(result: dict[str, float], args, device: torch.device, fpt: float, n_trainable: int) -> dict[str, float]:
    from lmsmith.hardware import peak_flops

    tokens = args.batch_size * args.seq_len
    result["tokens_per_s"] = tokens / result["seconds_per_step"]
    result["trainable_params"] = float(n_trainable)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device)
    if peak:
        result["mfu"] = fpt * result["tokens_per_s"] / peak
        result["model_tflops_per_s"] = fpt * result["tokens_per_s"] / 1e12
    if device.type == "cuda":
        result["peak_mem_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


# kernel-name patterns -> where the time goes (first match wins)
CATEGORIES = [
    ("attention bwd", r"flash.*bwd|bwd.*flash|fmha.*(bwd|backward)|cudnn.*(bprop|dgrad|bwd)|flex_attention_backward|attention_backward|_bwd_"),
    ("attention fwd", r"flash|fmha|cudnn.*(fprop|attn|sdpa)|flex_attention|attention"),
    ("GEMM", r"gemm|nvjet|xmma|cutlass|cublas|wgmma|splitk|sm90_|sm80_"),
    ("optimizer + clip", r"adam|multi_tensor|foreach|lpnorm"),
    ("CE/loss", r"logsumexp|cross_entropy|nll_loss|log_softmax|softmax"),
    ("elementwise/norm (compiled)", r"triton"),
    ("copies/casts/fill", r"copy|cast|memcpy|memset|fill|cat_|index"),
    ("elementwise/norm (eager)", r"."),
]


def profile_steps(step, args, device: torch.device, mode: str, n: int = 3) -> dict[str, float]:
    """torch.profiler over `n` steps: GPU time by kernel category, host/idle share, top kernels."""
    import re

    from torch.profiler import ProfilerActivity, profile

    sync(device)
    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t = time.perf_counter()
        for _ in range(n):
            step()
        sync(device)
        wall = (time.perf_counter() - t) / n * 1e3
    cats = {c: 0.0 for c, _ in CATEGORIES}
    kernels: list[tuple[str, float]] = []
    from torch.autograd import DeviceType

    for e in prof.key_averages():
        # kernels only: CPU ops and GPU-side annotation ranges ("Optimizer.step#AdamW.step") would count twice
        if getattr(e, "device_type", None) != DeviceType.CUDA or "#" in e.key or e.key.startswith("ProfilerStep"):
            continue
        us = float(getattr(e, "self_device_time_total", 0.0) or getattr(e, "self_cuda_time_total", 0.0) or 0.0)
        if us <= 0:
            continue
        kernels.append((e.key, us / n / 1e3))
        name = e.key.lower()
        for c, pat in CATEGORIES:
            if re.search(pat, name):
                cats[c] += us / n / 1e3
                break
    busy = sum(cats.values())
    summary = {"mode": mode, "step_ms": wall, "gpu_busy_ms": busy, "idle_or_host_ms": max(wall - busy, 0.0),
               "categories_ms": {k: round(v, 2) for k, v in cats.items()},
               "top_kernels_ms": [(k[:160], round(v, 2)) for k, v in sorted(kernels, key=lambda x: -x[1])[:30]]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"train_profile-{mode}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"profile {mode}: step {wall:.1f} ms, GPU busy {busy:.1f} ms", file=sys.stderr)
    for k, v in sorted(cats.items(), key=lambda x: -x[1]):
        print(f"  {k:32s} {v:8.2f} ms  {v / wall:6.1%}", file=sys.stderr)
    return summary


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_isolated(argv: list[str], name: str, mode: str, timeout: float) -> dict[str, float]:
    """One runner in its own process: an OOM, a compile error or a hang costs only that entry."""
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [sys.executable, "-m", "bench.train.train_throughput", *strip_flags(argv), "--only", f"{name}:{mode}",
           "--result-file", path]
    try:
        r = subprocess.run(cmd, timeout=timeout)
        if r.returncode != 0:
            return {"failed": float(r.returncode)}
        return json.loads(Path(path).read_text())
    except subprocess.TimeoutExpired:
        return {"timed_out": 1.0}
    except (OSError, json.JSONDecodeError):
        return {"failed": 1.0}


def strip_flags(argv: list[str]) -> list[str]:
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--isolate", "--trl", "--baseline", "--also-unfused-clip"):
            continue
        if a in ("--per-run-timeout", "--modes", "--name", "--baseline-modes", "--torchtitan"):
            skip = True
            continue
        out.append(a)
    return out


def torchtitan_isolated(args, timeout: float) -> dict[str, float]:
    """torchtitan's own Trainer on the same shape, batch and sequence length (bench/train/torchtitan_peer.py)."""
    import os
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [sys.executable, "-m", "bench.train.torchtitan_peer", "--steps", str(args.steps), "--warmup",
           str(args.warmup), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--json-out", path]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(args.torchtitan).resolve()),
                                                       os.environ.get("PYTHONPATH", "")]))
    try:
        r = subprocess.run(cmd, timeout=timeout, env=env)
        if r.returncode != 0:
            return {"torchtitan_failed": float(r.returncode)}
        return {k: v for k, v in json.loads(Path(path).read_text()).items() if isinstance(v, (int, float))}
    except subprocess.TimeoutExpired:
        return {"torchtitan_timed_out": 1.0}
    except (OSError, json.JSONDecodeError):
        return {"torchtitan_failed": 1.0}


def trl_isolated(args, timeout: float) -> dict[str, float]:
    import subprocess
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as f:
        path = f.name
    cmd = [sys.executable, "-m", "bench.train.trl_lora_baseline", "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len),
           "--lora-r", str(args.lora_r), "--json-out", path]
    try:
        r = subprocess.run(cmd, timeout=timeout)
        if r.returncode != 0:
            return {"trl_failed": float(r.returncode)}
        return json.loads(Path(path).read_text())
    except subprocess.TimeoutExpired:
        return {"trl_timed_out": 1.0}
    except (OSError, json.JSONDecodeError):
        return {"trl_failed": 1.0}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=sorted(PRESETS), default="llama-3.2-1b")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--modes", default="full,lora", help="comma-separated: full, lora")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--dtype", choices=["auto", "bf16", "fp32"], default="auto", help="auto: bf16 autocast on CUDA, fp32 on CPU")
    p.add_argument("--attn", default="sdpa", help="attention implementation (sdpa, eager, flash_attention_2)")
    p.add_argument("--gradient-checkpointing", action="store_true", help="HF gradient checkpointing (both loops)")
    p.add_argument("--ac", choices=["none", "selective", "full"], default="none",
                   help="lmsmith activation checkpointing (as `lmsmith train --ac`)")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="per-block torch.compile (default: the loop's: on for CUDA, off on CPU)")
    p.add_argument("--fused-loss", action=argparse.BooleanOptionalAction, default=None,
                   help="chunked lm_head + cross-entropy (default: the loop's: on for CUDA, off on CPU)")
    p.add_argument("--fused-clip", action=argparse.BooleanOptionalAction, default=True,
                   help="fold the gradient clip into the fused AdamW step (as `lmsmith train` does)")
    p.add_argument("--also-unfused-clip", action="store_true", help="also time full FT with --no-fused-clip")
    p.add_argument("--torchtitan", default=None, metavar="DIR",
                   help="also run torchtitan's Trainer (installed under DIR, see bench/train/torchtitan_peer.py)")
    p.add_argument("--sdpa-backend", default="auto", choices=["auto", "flash", "cudnn", "efficient", "math"])
    p.add_argument("--loss-chunk", type=int, default=None, help="tokens per fused-loss chunk (default: the loop's)")
    p.add_argument("--lora-dropout", type=float, default=0.0, help="as `lmsmith train --lora-dropout`")
    p.add_argument("--profile", action="store_true", help="torch.profiler summary of the lmsmith runs (CUDA)")
    p.add_argument("--baseline", action="store_true", help="also time the plain Hugging Face loop")
    p.add_argument("--baseline-modes", default="full,lora", help="modes the HF loop runs (with --baseline)")
    p.add_argument("--trl", action="store_true", help="also run TRL's SFTTrainer LoRA (bench/train/trl_lora_baseline.py)")
    p.add_argument("--only-trl", action="store_true", help="run only the TRL baseline (with --trl)")
    p.add_argument("--isolate", action="store_true", help="run every entry in its own process")
    p.add_argument("--per-run-timeout", type=float, default=300)
    p.add_argument("--only", default=None, help=argparse.SUPPRESS)
    p.add_argument("--result-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--name", default=None, help="result file name (default: train_throughput-PRESET-DEVICE.json)")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: 989 on H100/H200 bf16)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="directory for the JSON result")
    args = p.parse_args(argv)

    from lmsmith.models import quiet_transformers

    quiet_transformers()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.dtype == "auto":
        args.dtype = "bf16" if device.type == "cuda" else "fp32"
    argv = list(argv if argv is not None else sys.argv[1:])
    if args.only:  # child of --isolate: one entry, result into a file
        name, mode = args.only.split(":")
        r = {"lmsmith": lmsmith_run, "hf": hf_run}[name](args, mode, device)
        Path(args.result_file).write_text(json.dumps(r))
        return 0
    metrics: dict[str, float] = {"seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps}
    runners = [("lmsmith", lmsmith_run)] + ([("hf", hf_run)] if args.baseline else [])
    if args.only_trl:
        runners = []
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for mode in modes:
        for name, fn in runners:
            if name == "hf" and mode not in args.baseline_modes.split(","):
                continue
            key = f"{name}_{mode}"
            print(f"running {key} ...", file=sys.stderr, flush=True)
            if args.isolate:
                r = run_isolated(argv, name, mode, args.per_run_timeout)
            else:
                try:
                    r = fn(args, mode, device)
                except torch.OutOfMemoryError:
                    r = {"oom": 1.0}
            for k, v in r.items():  # issue-7 names: tokens_per_s_full, hf_peak_mem_gib_full, ...
                metrics[f"{k}_{mode}" if name == "lmsmith" else f"{name}_{k}_{mode}"] = v
            print(f"  {key}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.items()), file=sys.stderr, flush=True)
            cleanup(device)
    if args.also_unfused_clip and "full" in modes:  # A/B of the clip folded into AdamW, same run
        print("running lmsmith_full --no-fused-clip ...", file=sys.stderr, flush=True)
        r = run_isolated(argv + ["--no-fused-clip"], "lmsmith", "full", args.per_run_timeout)
        metrics.update({f"unfused_clip_{k}_full": v for k, v in r.items()})
    if args.torchtitan and "full" in modes:
        print("running torchtitan_full ...", file=sys.stderr, flush=True)
        metrics.update(torchtitan_isolated(args, args.per_run_timeout))
        if "torchtitan_tokens_per_s_full" in metrics and "tokens_per_s_full" in metrics:
            metrics["speedup_vs_torchtitan_full"] = metrics["tokens_per_s_full"] / metrics["torchtitan_tokens_per_s_full"]
    if args.trl and "lora" in modes:
        print("running trl_lora ...", file=sys.stderr, flush=True)
        metrics.update(trl_isolated(args, args.per_run_timeout))
    for m in ("full", "lora"):  # the headline ratios
        if f"tokens_per_s_{m}" in metrics and f"hf_tokens_per_s_{m}" in metrics:
            metrics[f"speedup_vs_hf_{m}"] = metrics[f"tokens_per_s_{m}"] / metrics[f"hf_tokens_per_s_{m}"]
    if "tokens_per_s_lora" in metrics and "trl_tokens_per_s_lora" in metrics:
        metrics["speedup_vs_trl_lora"] = metrics["tokens_per_s_lora"] / metrics["trl_tokens_per_s_lora"]
    result = make_result("train_throughput", metrics, device, argv, extra_versions=("peft", "trl"),
                         preset=args.preset, dtype=args.dtype)
    tag = "cuda" if device.type == "cuda" else "cpu"
    write_result(Path(args.out) / (args.name or f"train_throughput-{args.preset}-{tag}.json"), result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
