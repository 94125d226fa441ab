"""Training throughput of lmsmith's loop for a model shape: tokens/s, MFU and peak memory (CUDA).

Builds a random-init model of the shape (no download), runs warmup + timed optimizer steps of the same
step function `lmsmith train` uses (full fine-tuning and/or LoRA), and with `--baseline` the same shapes
through a plain Hugging Face loop (model(labels=...) + torch AdamW). Writes a JSON result into
bench/results/.

    python bench/train_throughput.py --preset tiny --device cpu --seq-len 128 --batch-size 2 --steps 3
    python bench/train_throughput.py --preset llama-3.2-1b --baseline      # on an H100: bf16, seq 2048, batch 8
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import platform
import shlex
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

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
    from lmsmith.train.config import PretrainConfig
    from lmsmith.train.loop import apply_update, flops_per_token, forward_backward, peak_flops
    from lmsmith.train.model import apply_lora, build_optimizer
    from lmsmith.train.objectives import CausalLMLoss

    model = build(args.preset, device, args.attn)
    cfg = PretrainConfig(model="bench", lr=1e-4, warmup_steps=0, lora_r=args.lora_r if mode == "lora" else None,
                         gradient_checkpointing=args.gradient_checkpointing)
    if mode == "lora":
        model = apply_lora(model, cfg, device).to(device)
    if args.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        if mode == "lora":
            model.enable_input_require_grads()
    if args.compile:
        model = torch.compile(model)
    model.train()
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt, sched = build_optimizer(model, cfg, args.steps + args.warmup, device)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if args.dtype == "bf16" else nullcontext
    objective = CausalLMLoss()
    vocab = PRESETS[args.preset]["vocab_size"]

    def batch():
        ids = torch.randint(0, vocab, (args.batch_size, args.seq_len), device=device)
        return {"input_ids": ids, "labels": ids}

    def step():
        forward_backward(model, objective, [batch()], device, amp, 1.0)
        apply_update(opt, sched)

    result = timed(step, args, device)
    fpt = flops_per_token(getattr(model, "_orig_mod", model), n_trainable, args.seq_len)
    return finish(result, args, device, fpt, n_trainable)


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
    from lmsmith.train.loop import peak_flops

    tokens = args.batch_size * args.seq_len
    result["tokens_per_s"] = tokens / result["seconds_per_step"]
    result["trainable_params"] = float(n_trainable)
    peak = args.peak_tflops * 1e12 if args.peak_tflops else peak_flops(device)
    if peak:
        result["mfu"] = fpt * result["tokens_per_s"] / peak
        result["model_tflops_per_s"] = fpt * result["tokens_per_s"] / 1e12
    if device.type == "cuda":
        result["peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return result


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cleanup(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


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
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the model (lmsmith runs only)")
    p.add_argument("--baseline", action="store_true", help="also time the plain Hugging Face loop")
    p.add_argument("--peak-tflops", type=float, default=None, help="peak for MFU (default: 989 on H100/H200 bf16)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"), help="directory for the JSON result")
    args = p.parse_args(argv)

    from lmsmith.models import quiet_transformers

    quiet_transformers()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.dtype == "auto":
        args.dtype = "bf16" if device.type == "cuda" else "fp32"
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    metrics: dict[str, float] = {"seq_len": args.seq_len, "batch_size": args.batch_size, "steps": args.steps}
    runners = [("lmsmith", lmsmith_run)] + ([("hf", hf_run)] if args.baseline else [])
    for mode in [m.strip() for m in args.modes.split(",") if m.strip()]:
        for name, fn in runners:
            key = f"{name}_{mode}"
            print(f"running {key} ...", file=sys.stderr, flush=True)
            try:
                r = fn(args, mode, device)
            except torch.OutOfMemoryError:
                r = {"oom": 1.0}
            for k, v in r.items():  # issue-7 names: tokens_per_s_full, hf_peak_mem_gib_lora, ...
                metrics[f"{k}_{mode}" if name == "lmsmith" else f"{name}_{k}_{mode}"] = v
            print(f"  {key}: " + ", ".join(f"{k}={v:.4g}" for k, v in r.items()), file=sys.stderr, flush=True)
            cleanup(device)
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        pass
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    result = {"benchmark": "train_throughput", "device": dev_name,
              "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "command": "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv if argv is not None else sys.argv[1:])]),
              "versions": versions, "preset": args.preset, "dtype": args.dtype, "metrics": metrics}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = "cuda" if device.type == "cuda" else "cpu"
    path = out / f"train_throughput-{args.preset}-{tag}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["metrics"], indent=2))
    print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
