"""Capacity planning: will a training or serving configuration fit, and how fast will it run?

Training memory per GPU is the sum of parts that can each be reasoned about:
  weights, gradients, optimizer states  (bytes per parameter, divided by the GPUs when sharded)
  activations                           (bytes per token per layer, unless recomputed)
  logits                                (tokens x vocab in the loss, unless the loss is chunked)
  gathered layers                       (FSDP all-gathers full bf16 layers one or two at a time)
Serving memory is weights plus the KV cache: 2 x layers x kv_heads x head_dim x bytes x tokens.
Throughput comes from a measured MFU: tokens/s = MFU x peak FLOP/s x GPUs / FLOPs per token, with
FLOPs per token = 4 N + 2 N_trainable + 12 L d S (`lmsmith.hardware.flops_per_token`: 6 N for full training).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from lmsmith import hardware
from lmsmith.errors import LmsmithError
from lmsmith.hardware import GPU_BANDWIDTH_TBS, GPU_PEAK_TFLOPS

GiB = 1024**3

# Model shapes users plan with before they have the weights (HF config field names).
SHAPES: dict[str, dict[str, Any]] = {
    "smollm2-135m": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                         num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True),
    "llama-3.2-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.2-3b": dict(hidden_size=3072, intermediate_size=8192, num_hidden_layers=28, num_attention_heads=24,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True),
    "llama-3.1-8b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                         num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
    "mistral-7b": dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, vocab_size=32768, tie_word_embeddings=False),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                       num_key_value_heads=4, vocab_size=152064, tie_word_embeddings=False, attention_bias=True),
    "llama-3.1-70b": dict(hidden_size=8192, intermediate_size=28672, num_hidden_layers=80, num_attention_heads=64,
                          num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False),
}
DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2, "fp8": 1, "int8": 1, "int4": 0.5}


@dataclass
class Shape:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    head_dim: int
    tied: bool
    qkv_bias: bool = False

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> "Shape":
        try:
            h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
            return cls(hidden=h, intermediate=int(cfg["intermediate_size"]), layers=int(cfg["num_hidden_layers"]),
                       heads=heads, kv_heads=int(cfg.get("num_key_value_heads") or heads), vocab=int(cfg["vocab_size"]),
                       head_dim=int(cfg.get("head_dim") or h // heads), tied=bool(cfg.get("tie_word_embeddings", False)),
                       qkv_bias=bool(cfg.get("attention_bias", False) or cfg.get("model_type") == "qwen2"))
        except KeyError as e:
            raise LmsmithError(f"model config lacks {e.args[0]}", "give a decoder-only (Llama-like) config") from None

    def layer_params(self) -> int:
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        bias = (q + 2 * kv) if self.qkv_bias else 0
        return h * q + 2 * h * kv + q * h + 3 * h * i + 2 * h + bias

    def params(self) -> int:
        emb = self.vocab * self.hidden
        return emb * (1 if self.tied else 2) + self.layers * self.layer_params() + self.hidden

    def lora_params(self, r: int) -> int:
        h, q, kv, i = self.hidden, self.heads * self.head_dim, self.kv_heads * self.head_dim, self.intermediate
        per_layer = r * ((h + q) + 2 * (h + kv) + (q + h) + 2 * (h + i) + (i + h))  # q k v o gate up down
        return self.layers * per_layer

    def matmul_params(self) -> int:
        """Weights used in matmuls: all but the input embedding lookup (the tied head is one)."""
        return self.params() - (0 if self.tied else self.vocab * self.hidden)

    def flops_per_token(self, seq_len: int, trainable: int | None = None) -> float:
        """Training FLOPs per token (`lmsmith.hardware.flops_per_token`; all weights trainable by default)."""
        n = self.matmul_params()
        return hardware.flops_per_token(n, n if trainable is None else trainable, self.layers,
                                        self.heads * self.head_dim, seq_len)

    def kv_bytes_per_token(self, dtype_bytes: float = 2) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * dtype_bytes


def load_shape(spec: str) -> tuple[str, Shape]:
    """A preset name (`llama-3.2-1b`), a config.json path, or a model ref."""
    if spec in SHAPES:
        return spec, Shape.from_config(SHAPES[spec])
    p = Path(spec)
    if p.is_file():
        return p.stem, Shape.from_config(json.loads(p.read_text()))
    try:
        from lmsmith.models import read_config

        return spec, Shape.from_config(read_config(spec))
    except LmsmithError as e:
        raise LmsmithError(f"'{spec}' is neither a shape preset, a config.json, nor a model: {e.message}",
                           f"presets: {', '.join(SHAPES)}") from None


@dataclass
class TrainPlan:
    model: str
    params: int
    trainable: int
    gpus: int
    gpu_mem_gib: float
    parts_gib: dict[str, float] = field(default_factory=dict)
    total_gib: float = 0.0
    fits: bool = True
    tokens_per_s: float = 0.0
    mfu: float = 0.0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_train(shape: Shape, *, name: str = "model", gpus: int = 1, gpu_mem_gib: float = 80.0, seq_len: int = 2048,
               micro_batch: int = 1, strategy: Literal["fsdp", "ddp", "single"] = "fsdp", lora: bool = False,
               lora_r: int = 16, qlora: bool = False, ac: Literal["none", "selective", "full"] = "none",
               chunked_loss: bool = False, mfu: float = 0.40, gpu: str = "h100",
               reshard_after_forward: bool = True, compile: bool = False, master_weights: bool = False) -> TrainPlan:
    """Predict per-GPU peak memory (as torch.cuda.max_memory_allocated sees it) and tokens/s.

    Assumes mixed precision as the training loop runs it: fp32 master weights, bf16 compute,
    AdamW (two fp32 moments), SDPA/flash attention (no S x S matrix kept). `compile` (the loop's CUDA
    default) keeps fewer activations: inductor recomputes norms and SiLU products in backward, and the
    compiled loss chunk holds bf16 logits and gradient only. `master_weights` (full fine-tuning on one GPU): bf16
    weights and gradients with fp32 masters in the optimizer, a bf16 residual stream, no autocast copies."""
    if gpus < 1 or micro_batch < 1 or seq_len < 1:
        raise LmsmithError("--gpus, --micro-batch and --seq-len must be positive")
    if master_weights and (lora or qlora or strategy != "single" or gpus > 1):
        raise LmsmithError("--master-weights plans full fine-tuning on one GPU",
                           "drop --master-weights (or --lora/--qlora/--fsdp/--ddp)")
    n = shape.params()
    shard = gpus if strategy == "fsdp" and gpus > 1 else 1
    parts: dict[str, float] = {}
    notes: list[str] = []
    tokens = micro_batch * seq_len
    fsdp = shard > 1
    emb = shape.vocab * shape.hidden * (1 if shape.tied else 2)
    if lora or qlora:
        # the frozen base is kept in bf16 (or NF4 codes + one fp32 absmax per 64 weights) and not copied by autocast
        base_bytes = 0.5 + 4 / 64 if qlora else 2.0
        trainable = shape.lora_params(lora_r)
        parts["frozen base weights"] = n * base_bytes / shard
        parts["adapter weights+grads+adam"] = trainable * 16 / shard
    elif master_weights:
        trainable = n
        parts["weights (bf16)"] = n * 2
        parts["weights (fp32 master)"] = n * 4
        parts["gradients (bf16)"] = n * 2
        parts["adam moments (fp32)"] = n * 8
    else:
        trainable = n
        parts["weights (fp32 master)"] = n * 4 / shard
        parts["gradients (fp32)"] = n * 4 / shard
        parts["adam moments (fp32)"] = n * 8 / shard
        if not fsdp:
            parts["bf16 weight copies (autocast)"] = n * 2  # autocast keeps the casts alive for backward
    if fsdp:
        layer = shape.layer_params() * 2
        if reshard_after_forward:
            gathered = 2 * layer * 2  # current + prefetched layer: bf16 weights and bf16 gradients
        else:
            gathered = shape.layers * layer + 2 * layer  # all weights stay gathered; gradients reduced per layer
        # the root group (embeddings, final norm, head) stays gathered for the whole step
        parts["gathered bf16 layers"] = gathered + emb * 2 * 2
    h, kv, i = shape.hidden, shape.kv_heads * shape.head_dim, shape.intermediate
    q = shape.heads * shape.head_dim
    # bytes kept per token per layer for backward (bf16 tensors, fp32 norm inputs)
    norm_in = 2 if master_weights else 4  # the norms' inputs: the residual stream's dtype
    per_token_layer = 2 * (h + q + 2 * kv + q + kv + q + q) + norm_in * 2 * h + 2 * h + 2 * 4 * i
    if (lora or qlora) and not compile:
        # adapters keep about two more layer inputs per token for backward (calibrated: plan_check-h100.json)
        per_token_layer += 2 * (q + i)
    # the residual stream is fp32 under autocast over fp32 weights, bf16 under FSDP's policy or a bf16 (LoRA) base
    res = 2 if (fsdp or lora or qlora or master_weights) else 4
    block_input = 2 * h if (fsdp or master_weights) else 4 * h
    mlp_kept = 2 * 3 * i  # gate, up and their product (the down projection's input)
    if compile:
        # q, k, v and the attention output; two residual inputs and two normed inputs; the MLP's three
        # intermediates (calibrated on an H100: train_throughput-h100.json, batch 8 x 2048)
        per_token_layer = 2 * (2 * q + 2 * kv) + 2 * res * h + 2 * 2 * h + mlp_kept
        block_input = res * h
    if compile and ac == "selective":
        parts["activations"] = tokens * shape.layers * (per_token_layer - mlp_kept) + tokens * mlp_kept
        notes.append("selective checkpointing: MLP intermediates recomputed")
    elif ac == "full":
        parts["activations"] = tokens * shape.layers * block_input + tokens * per_token_layer
        notes.append("full activation checkpointing: one layer input kept per layer, one layer recomputed at a time")
    elif ac == "selective":
        parts["activations"] = tokens * shape.layers * (per_token_layer - 2 * 4 * i + 2 * 2 * h) + tokens * per_token_layer
        notes.append("selective checkpointing: MLP intermediates recomputed")
    else:
        parts["activations"] = tokens * shape.layers * per_token_layer
    if chunked_loss and compile:
        # one 4096-token chunk of bf16 logits and their bf16 gradient, plus the head's fp32 weight gradient
        head_grad = 0 if (lora or qlora) else shape.vocab * shape.hidden * (2 if master_weights else 4)
        parts["logits and loss"] = min(tokens, 4096) * shape.vocab * (2 + 2) + head_grad
    elif chunked_loss:
        # one chunk of logits in flight, plus the head's fp32 weight gradient accumulated during forward
        parts["logits and loss"] = min(tokens, 1024) * shape.vocab * (2 + 4 + 4) + shape.vocab * shape.hidden * 4
    else:
        # bf16 logits, their fp32 copy, and the fp32 log-softmax / gradient
        parts["logits and loss"] = tokens * shape.vocab * (2 + 4 + 4)
    parts["CUDA workspace"] = 1.5 * GiB  # cuBLAS workspaces, allocator rounding, optimizer temporaries
    # Two peaks: the end of forward (activations and logits alive, gradients not yet) and the optimizer
    # step (all gradients alive, activations and autocast copies freed). Measured on an H100 within ~10%
    # (bench/results/plan_check-h100.json).
    grads = parts.get("gradients (fp32)", parts.get("gradients (bf16)", 0.0))
    transient = parts["activations"] + parts["logits and loss"] + parts.get("bf16 weight copies (autocast)", 0.0)
    total = sum(parts.values()) - grads - transient + max(transient, grads)
    parts_gib = {k: round(v / GiB, 2) for k, v in parts.items()}
    peak = GPU_PEAK_TFLOPS.get(gpu.lower(), GPU_PEAK_TFLOPS["h100"]) * 1e12
    flops_tok = shape.flops_per_token(seq_len, trainable)  # LoRA: no weight gradients for the frozen base
    tps = mfu * peak * gpus / flops_tok
    fits = total / GiB <= gpu_mem_gib * 0.95
    if not fits:
        if strategy != "fsdp" and not lora:
            notes.append("does not fit: shard with --fsdp across more GPUs, or use --lora")
        elif ac == "none":
            notes.append("does not fit: try --ac full, a smaller --micro-batch, or more GPUs")
        else:
            notes.append("does not fit: use more GPUs, a smaller --micro-batch or --seq-len, or --lora/--qlora")
    return TrainPlan(model=name, params=n, trainable=trainable, gpus=gpus, gpu_mem_gib=gpu_mem_gib,
                     parts_gib=parts_gib, total_gib=round(total / GiB, 2), fits=fits, tokens_per_s=round(tps),
                     mfu=mfu, notes=notes)


def plan_serve(shape: Shape, *, name: str = "model", gpus: int = 1, gpu_mem_gib: float = 80.0,
               weight_dtype: str = "bfloat16", kv_dtype: str = "bfloat16", context: int = 8192,
               concurrency: int = 1, mem_fraction: float = 0.9, gpu: str = "h100") -> dict[str, Any]:
    """Weights + KV cache per GPU (tensor parallel across `gpus`), and how many full-context sequences fit."""
    for d in (weight_dtype, kv_dtype):
        if d not in DTYPE_BYTES:
            raise LmsmithError(f"unknown dtype '{d}'", f"use one of: {', '.join(DTYPE_BYTES)}")
    weights = shape.params() * DTYPE_BYTES[weight_dtype] / gpus
    kv_tok = shape.kv_bytes_per_token(DTYPE_BYTES[kv_dtype]) / gpus
    kv_need = kv_tok * context * concurrency
    budget = gpu_mem_gib * GiB * mem_fraction - weights
    max_tokens = int(max(budget, 0) // kv_tok)
    fits = weights + kv_need <= gpu_mem_gib * GiB * mem_fraction
    return {
        "model": name, "gpu": gpu, "gpus": gpus, "gpu_mem_gib": gpu_mem_gib, "usable_gib": round(gpu_mem_gib * mem_fraction, 2),
        "weight_dtype": weight_dtype, "kv_dtype": kv_dtype, "context": context, "concurrency": concurrency,
        "weights_gib": round(weights / GiB, 2),
        "kv_bytes_per_token": kv_tok, "kv_cache_gib": round(kv_need / GiB, 2),
        "total_gib": round((weights + kv_need) / GiB, 2), "fits": fits,
        "max_kv_tokens": max_tokens, "max_full_context_sequences": max_tokens // context,
        # decoding reads every weight once per step: the batch-1 ceiling is bandwidth / weight bytes
        "decode_bs1_tok_s_upper_bound": round(GPU_BANDWIDTH_TBS.get(gpu.lower(), 3.0) * 1e12 / weights),
    }


def serve_alternatives(shape: Shape, plan: dict[str, Any], mem_fraction: float = 0.9) -> list[str]:
    """When a serving plan does not fit: why, and the nearest settings that would (one change at a time)."""
    kw = dict(name=plan["model"], gpus=plan["gpus"], gpu_mem_gib=plan["gpu_mem_gib"], weight_dtype=plan["weight_dtype"],
              kv_dtype=plan["kv_dtype"], context=plan["context"], concurrency=plan["concurrency"], gpu=plan["gpu"],
              mem_fraction=mem_fraction)
    usable = plan["usable_gib"]
    out = [f"needs {plan['total_gib']:.1f} GiB per GPU (weights {plan['weights_gib']:.1f} + KV cache "
           f"{plan['kv_cache_gib']:.1f}) but {plan['gpu']} has {usable:.1f} GiB usable"]
    for n in (2, 4, 8, 16):
        if n > plan["gpus"] and plan_serve(shape, **{**kw, "gpus": n})["fits"]:
            out.append(f"{n} GPUs with tensor parallelism (--gpus {n})")
            break
    for wd, kd in (("int8", plan["kv_dtype"]), ("fp8", "fp8"), ("int4", plan["kv_dtype"]), ("int4", "fp8")):
        if DTYPE_BYTES[wd] < DTYPE_BYTES[plan["weight_dtype"]] and plan_serve(shape, **{**kw, "weight_dtype": wd, "kv_dtype": kd})["fits"]:
            out.append(f"{wd} weights" + (f" and {kd} KV cache" if kd != plan["kv_dtype"] else "")
                       + f" (--weight-dtype {wd}" + (f" --kv-dtype {kd}" if kd != plan["kv_dtype"] else "") + ")")
            break
    if plan["max_kv_tokens"] > 0:
        ctx = plan["max_kv_tokens"] // plan["concurrency"]
        if ctx >= 256:
            out.append(f"a shorter context: up to {ctx:,} tokens at {plan['concurrency']} concurrent sequences "
                       f"(--context {ctx})")
        if plan["max_full_context_sequences"] >= 1:
            out.append(f"fewer concurrent sequences: {plan['max_full_context_sequences']} at the full "
                       f"{plan['context']:,}-token context (--concurrency {plan['max_full_context_sequences']})")
    else:
        out.append("the weights alone do not fit: more GPUs or lower-precision weights")
    return out
