"""Does `lmsmith plan train` predict what the loop really uses? Measured peak vs predicted, per config.

For each configuration, builds a random-init model of the shape on one GPU, prepares it the way
`lmsmith train` does (LoRA, fused loss, activation checkpointing), runs a few optimizer steps of the
loop's own step function (bf16 autocast over fp32 master weights, fused AdamW, SDPA) and records
`torch.cuda.max_memory_allocated` next to `plan_train`'s total for the same options.

    python -m bench.train.plan_check                                   # llama-3.2-1b, the default grid, on CUDA
    python -m bench.train.plan_check --configs full_b1,full_b4_fused_acfull,lora_b4 --seq-len 2048
    python -m bench.train.plan_check --preset tiny --device cpu --configs full_b1   # smoke test (no memory numbers)

Config names: `full|lora` + `_b<micro-batch>` + optional `_fused` (--fused-loss) and `_acfull` /
`_acsel` (--ac full / selective). Metrics: measured_gib_<cfg>, predicted_gib_<cfg>, error_pct_<cfg>
(signed: (predicted - measured) / measured), and max_abs_error_pct.
"""

from __future__ import annotations

import argparse
import gc
import re
import sys
from contextlib import nullcontext
from pathlib import Path

import torch

from bench._result import make_result, write_result
from bench.common import ROOT

DEFAULT_CONFIGS = ("full_b1,full_b2,full_b4,full_b1_fused,full_b2_fused,full_b4_fused,full_b4_acfull,"
                   "full_b4_fused_acfull,full_b4_fused_acsel,lora_b1,lora_b4,lora_b4_fused")
CFG_RE = re.compile(r"^(full|lora)_b(\d+)((?:_fused|_acfull|_acsel)*)$")


def parse_config(name: str) -> dict:
    m = CFG_RE.match(name)
    if not m:
        raise SystemExit(f"bad config name '{name}' (e.g. full_b4_fused_acfull, lora_b2)")
    flags = m.group(3)
    return {"name": name, "lora": m.group(1) == "lora", "micro_batch": int(m.group(2)), "fused": "_fused" in flags,
            "ac": "full" if "_acfull" in flags else "selective" if "_acsel" in flags else "none"}


def measure(c: dict, args, device: torch.device) -> float:
    """Peak allocated GiB of a few training steps of the loop, from an empty GPU."""
    from bench.common import build_model, model_config
    from lmsmith.train import distributed as D
    from lmsmith.train.config import PretrainConfig
    from lmsmith.train.fused_loss import FusedCausalLMLoss
    from lmsmith.train.loop import apply_update, forward_backward
    from lmsmith.train.model import apply_lora, build_optimizer
    from lmsmith.train.objectives import CausalLMLoss
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    mcfg = model_config(args.preset)
    model = build_model(mcfg, device, meta=False, attn=args.attn)
    tcfg = PretrainConfig(model="bench", lr=1e-4, warmup_steps=0, lora_r=args.lora_r if c["lora"] else None)
    if c["lora"]:
        model = apply_lora(model, tcfg, device).to(device)
        if c["ac"] != "none":
            model.enable_input_require_grads()
    env = D.DistEnv(device=device)
    model, head = D.prepare_model(model, env, ac=c["ac"], fused_loss=c["fused"])
    model.train()
    opt, sched = build_optimizer(model, tcfg, args.steps, device)
    amp = (lambda: torch.autocast(device.type, dtype=torch.bfloat16)) if device.type == "cuda" else nullcontext
    objective = FusedCausalLMLoss(head) if head is not None else CausalLMLoss()
    for _ in range(args.steps):
        ids = torch.randint(0, mcfg.vocab_size, (c["micro_batch"], args.seq_len), device=device)
        forward_backward(model, objective, [{"input_ids": ids, "labels": ids}], device, amp, 1.0)
        apply_update(opt, sched)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0
    del model, opt, sched, objective, head
    gc.collect()
    return peak


def predict(c: dict, args) -> tuple[float, dict]:
    from bench.common import model_config
    from lmsmith.ops.planner import Shape, plan_train
    shape = Shape.from_config(model_config(args.preset).to_dict())
    plan = plan_train(shape, name=args.preset, gpus=1, gpu_mem_gib=args.gpu_mem, seq_len=args.seq_len,
                      micro_batch=c["micro_batch"], strategy="single", lora=c["lora"], lora_r=args.lora_r,
                      ac=c["ac"], chunked_loss=c["fused"])
    return plan.total_gib, plan.parts_gib


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="llama-3.2-1b", help="tiny or a `lmsmith plan` shape")
    p.add_argument("--configs", default=DEFAULT_CONFIGS, help="comma-separated config names")
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--steps", type=int, default=3, help="optimizer steps per config (peak is reached by step 2)")
    p.add_argument("--lora-r", type=int, default=16)
    p.add_argument("--attn", default="sdpa")
    p.add_argument("--device", default="auto")
    p.add_argument("--gpu-mem", type=float, default=None, help="GiB for the planner's fit check (default: this GPU)")
    p.add_argument("--out", default=str(ROOT / "bench" / "results"))
    args = p.parse_args(argv)

    from lmsmith.models import quiet_transformers

    quiet_transformers()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    if args.gpu_mem is None:
        args.gpu_mem = torch.cuda.get_device_properties(device).total_memory / 2**30 if device.type == "cuda" else 80.0
    metrics: dict[str, float] = {"seq_len": args.seq_len}
    details: dict[str, dict] = {}
    errors = []
    for name in [x.strip() for x in args.configs.split(",") if x.strip()]:
        c = parse_config(name)
        pred, parts = predict(c, args)
        try:
            meas = measure(c, args, device)
            oom = False
        except torch.OutOfMemoryError:
            meas, oom = float("nan"), True
            gc.collect()
            torch.cuda.empty_cache()
        metrics[f"predicted_gib_{name}"] = round(pred, 3)
        if oom:
            metrics[f"oom_{name}"] = 1.0
        elif device.type == "cuda":
            err = 100.0 * (pred - meas) / meas
            metrics[f"measured_gib_{name}"] = round(meas, 3)
            metrics[f"error_pct_{name}"] = round(err, 2)
            errors.append(abs(err))
        details[name] = {"predicted_parts_gib": parts, "measured_gib": None if oom else meas}
        print(f"{name}: predicted {pred:.2f} GiB, measured {'OOM' if oom else f'{meas:.2f} GiB'}",
              file=sys.stderr, flush=True)
    if errors:
        metrics["max_abs_error_pct"] = round(max(errors), 2)
        metrics["mean_abs_error_pct"] = round(sum(errors) / len(errors), 2)
    result = make_result("plan_check", metrics, device, argv, preset=args.preset, details=details)
    write_result(Path(args.out) / f"plan_check-{args.preset}-{'cuda' if device.type == 'cuda' else 'cpu'}.json", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
