"""Training options: one pydantic model per command, every field a CLI flag and a YAML key."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lmsmith.config import Config

# Options that may change between the original run and `resume` without changing the computation.
RESUME_MUTABLE = {"resume", "run_dir", "save_every", "keep_checkpoints", "tracking_uri", "mlflow", "experiment",
                  "workers", "log_every", "plot", "output_name", "eval_every", "eval_batches",
                  # parallelism and speed: the same math on any number of processes
                  "nproc", "fsdp", "ddp", "reshard_after_forward", "ac", "compile", "fused_loss",
                  "sdpa_backend", "prefetch"}


class TrainConfig(Config):
    """Options shared by every training command (the loop's knobs)."""

    task: Literal["pretrain", "sft", "dpo", "rm", "grpo", "distill"] = Field("pretrain", description="what to train (set by the command)")
    model: str | None = Field(None, description="model ref to start from (registry name[@version] or path)")
    model_config_file: str | None = Field(None, description="HF config.json for a model trained from scratch "
                                                            "(also --model-config)")
    tokenizer: str | None = Field(None, description="tokenizer ref (default: the model's)")
    data: list[str] = Field(default_factory=list, description="data files, globs or directories")
    eval_data: list[str] = Field(default_factory=list, description="held-out data (default: split off --eval-fraction)")
    eval_fraction: float = Field(0.05, ge=0, lt=1, description="share of the data held out for eval loss")
    skip_bad_lines: bool = Field(False, description="skip (and count) JSONL lines that fail to parse")
    seq_len: int = Field(1024, gt=1, description="sequence length (SFT: maximum example length)")
    too_long: Literal["truncate", "drop"] = Field("truncate", description="what to do with examples longer than --seq-len")
    cross_doc_attention: bool = Field(True, description="let packed documents attend to each other "
                                                        "(--no-cross-doc-attention isolates them)")
    steps: int | None = Field(None, gt=0, description="optimizer steps (default: from --epochs)")
    epochs: float = Field(1.0, gt=0, description="passes over the data when --steps is not given")
    batch_size: int = Field(8, gt=0, description="sequences per micro-batch")
    grad_accum: int = Field(1, gt=0, description="micro-batches per optimizer step")
    lr: float = Field(3e-4, gt=0, description="peak learning rate")
    schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="learning-rate decay after warmup")
    warmup_steps: int | None = Field(None, ge=0, description="linear warmup steps (default: 5% of steps)")
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="final lr as a share of --lr (cosine/linear)")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (not applied to norms and biases)")
    beta1: float = 0.9
    beta2: float = 0.95
    max_grad_norm: float = Field(1.0, ge=0, description="gradient clipping norm (0 = off)")
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on CUDA, fp32 on CPU")
    device: str = Field("auto", description="auto, cpu or cuda[:N]")
    seed: int = Field(0, description="seed for init, data order and dropout")
    full: bool = Field(False, description="train all weights (no LoRA)")
    lora_r: int | None = Field(None, gt=0, description="LoRA rank (enables LoRA)")
    lora_alpha: float | None = Field(None, gt=0, description="LoRA alpha (default: 2 x rank)")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the LoRA input (0 keeps dropout off the "
                                                             "hot path: no extra copy of every adapted input)")
    lora_targets: list[str] | None = Field(None, description="module names to adapt (default: all linear layers "
                                                              "of attention and MLP)")
    qlora: bool = Field(False, description="keep the frozen base in 4-bit NF4 (implies LoRA)")
    merge: bool = Field(False, description="register the merged model instead of the adapter")
    qat: Literal["int4", "int8"] | None = Field(None, description="quantization-aware training: fake-quantize the "
                                                                   "linears to this storage grid (needs --full)")
    qat_group_size: int | None = Field(None, description="--qat int4 group size (default: the largest of 128, 64, "
                                                         "32 dividing every layer)")
    gradient_checkpointing: bool = Field(False, description="recompute activations to save memory")
    run_dir: str | None = Field(None, description="run directory (default: $LMSMITH_HOME/runs/<run id>)")
    resume: bool = Field(False, description="continue the run in --run-dir from its last checkpoint")
    save_every: int = Field(0, ge=0, description="checkpoint every N steps (0 = only at the end)")
    keep_checkpoints: int = Field(2, gt=0, description="checkpoints to keep")
    eval_every: int = Field(0, ge=0, description="eval loss every N steps (0 = only at the end)")
    eval_batches: int = Field(20, gt=0, description="at most this many batches per evaluation")
    log_every: int = Field(0, ge=0, description="also print a log line every N steps (0 = progress bar only)")
    workers: int | None = Field(None, ge=1, description="tokenizer processes (default: CPU count)")
    output_name: str | None = Field(None, description="register the result under this name")
    tracking_uri: str | None = Field(None, description="MLflow tracking URI (default: a local store under $LMSMITH_HOME)")
    mlflow: bool = Field(True, description="log to MLflow when it is installed")
    experiment: str = Field("lmsmith", description="MLflow experiment name")
    plot: bool = Field(True, description="write a loss / learning-rate PNG into the run directory")
    # parallelism and speed (lmsmith.train.distributed, lmsmith.train.fused_loss)
    nproc: int | None = Field(None, ge=1, description="processes (GPUs) on this machine: re-runs itself under "
                                                      "torchrun --standalone --nproc-per-node N")
    fsdp: bool = Field(False, description="shard weights, gradients and optimizer states with FSDP2 "
                                          "(default with more than one process)")
    ddp: bool = Field(False, description="replicate the model with DDP (small models: one all-reduce per step)")
    reshard_after_forward: bool = Field(True, description="FSDP: free gathered weights after forward (ZeRO-3); "
                                                          "--no-reshard-after-forward keeps them (ZeRO-2-like)")
    ac: Literal["none", "selective", "full"] = Field("none", description="activation checkpointing: full = every "
                                                                          "block, selective = MLPs only")
    compile: bool | None = Field(None, description="torch.compile each decoder block and the loss kernel "
                                                   "(default: on for CUDA, off on CPU)")
    fused_loss: bool | None = Field(None, description="chunked lm_head + cross-entropy, never the full fp32 logits "
                                                      "(default: on for CUDA, off on CPU)")
    sdpa_backend: Literal["auto", "flash", "cudnn", "efficient", "math"] = Field(
        "auto", description="preferred scaled-dot-product attention kernel (auto: torch's choice, which is cuDNN "
                           "on H100 with torch 2.11)")
    prefetch: int = Field(2, ge=0, description="batches prepared ahead in a background thread (0 = off)")
    master_weights: bool | None = Field(None, description="bf16 weights with fp32 master copies in the optimizer "
                                                          "(default: on for bf16 full fine-tuning on one GPU with "
                                                          "--grad-accum 1; no per-step weight casts)")

    @field_validator("data", "eval_data", mode="before")
    @classmethod
    def _flatten(cls, v: Any) -> list[str]:
        """Accept a string, a list, or a list of lists (repeated/comma-separated flags). Paths are made
        absolute, so `train resume` works from any directory."""
        items = v if isinstance(v, list) else [v]
        out: list[str] = []
        for item in items:
            for x in item if isinstance(item, list) else str(item).split(","):
                if str(x).strip():
                    out.append(os.path.abspath(os.path.expanduser(str(x).strip())))
        return out

    @property
    def use_lora(self) -> bool:
        return (self.lora_r is not None or self.qlora) and not self.full

    def speed_defaults(self, device_type: str) -> tuple[bool, bool]:
        """(compile, fused_loss) with "auto" (None) resolved: on for CUDA, off on CPU (fast CPU tests)."""
        on = device_type == "cuda"
        return (on if self.compile is None else self.compile), (on if self.fused_loss is None else self.fused_loss)

    def comparable(self) -> dict[str, Any]:
        """The options that define the computation (what `resume` must match)."""
        d = self.model_dump(mode="json")
        return {k: v for k, v in d.items() if k not in RESUME_MUTABLE}


class PretrainConfig(TrainConfig):
    task: Literal["pretrain", "sft", "dpo", "rm", "grpo", "distill"] = "pretrain"


class SFTConfig(TrainConfig):
    task: Literal["pretrain", "sft", "dpo", "rm", "grpo", "distill"] = "sft"
    seq_len: int = Field(2048, gt=1, description="maximum example length in tokens")
    epochs: float = Field(3.0, gt=0, description="passes over the data when --steps is not given")
    lr: float = Field(2e-4, gt=0, description="peak learning rate")
    lora_r: int | None = Field(16, gt=0, description="LoRA rank (SFT uses LoRA unless --full)")


class DPOConfig(SFTConfig):
    """Direct preference optimization and its relatives on (prompt, chosen, rejected) pairs."""

    task: Literal["pretrain", "sft", "dpo", "rm", "grpo", "distill"] = "dpo"
    seq_len: int = Field(1024, gt=1, description="maximum length of prompt + answer in tokens")
    epochs: float = Field(1.0, gt=0, description="passes over the data when --steps is not given")
    lr: float = Field(5e-6, gt=0, description="peak learning rate (LoRA usually wants ~1e-4)")
    lora_r: int | None = Field(None, gt=0, description="LoRA rank (default: full fine-tuning)")
    beta: float = Field(0.1, gt=0, description="strength of the tie to the reference (DPO beta; SimPO beta; "
                                               "ORPO lambda)")
    loss: Literal["sigmoid", "ipo", "hinge", "simpo", "orpo"] = Field(
        "sigmoid", description="sigmoid = DPO, ipo, hinge (SLiC), simpo and orpo (both reference-free)")
    ref_model: str | None = Field(None, description="reference model ref (default: the starting model; with LoRA "
                                                    "the adapter is switched off, never a second copy)")
    rpo_alpha: float | None = Field(None, ge=0, description="add A x the length-normalized NLL of the chosen "
                                                            "answer (keeps its likelihood from collapsing)")
    simpo_gamma: float = Field(0.5, description="SimPO target margin gamma/beta ratio")
    label_smoothing: float = Field(0.0, ge=0, lt=0.5, description="conservative DPO: assumed share of flipped labels")


class RMConfig(SFTConfig):
    """Bradley-Terry reward model: a scalar head on the backbone, trained on preference pairs."""

    task: Literal["pretrain", "sft", "dpo", "rm", "grpo", "distill"] = "rm"
    seq_len: int = Field(1024, gt=1, description="maximum length of prompt + answer in tokens")
    epochs: float = Field(1.0, gt=0, description="passes over the data when --steps is not given")
    lr: float = Field(1e-5, gt=0, description="peak learning rate")
    lora_r: int | None = Field(None, gt=0, description="LoRA rank (default: full; a LoRA reward model is "
                                                       "registered merged so any tool loads it)")
    center_rewards: float | None = Field(None, ge=0, description="reward centering coefficient: adds "
                                                                 "C x mean((r_chosen + r_rejected)^2)")


class GRPOConfig(TrainConfig):
    """Online RL with verifiable rewards: rollouts from lmsmith's engine, group-normalized advantages."""

    task: Literal["pretrain", "sft", "dpo", "rm", "grpo", "distill"] = "grpo"
    reward: list[str] = Field(default_factory=list, description="reward functions: verifier:module:function, "
                                                                "verifier:NAME (built in), rm:NAME, judge:REF")
    reward_weights: list[float] | None = Field(None, description="weight per --reward (default: all 1)")
    group_size: int = Field(8, ge=2, description="completions sampled per prompt")
    batch_size: int = Field(4, gt=0, description="prompts per micro-batch (x --group-size completions)")
    max_new_tokens: int = Field(64, gt=0, description="completion length limit")
    temperature: float = Field(1.0, gt=0, description="sampling temperature of the rollouts")
    top_p: float = Field(1.0, gt=0, le=1, description="nucleus sampling of the rollouts")
    epsilon: float = Field(0.2, gt=0, description="ratio clip range (lower)")
    epsilon_high: float | None = Field(None, gt=0, description="ratio clip range (upper; DAPO clip-higher, "
                                                               "default: --epsilon)")
    kl_beta: float = Field(0.0, ge=0, description="KL penalty to the reference (0 = none, current practice; "
                                                  ">0 needs LoRA: the reference is the adapter switched off)")
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = Field("dapo", description="how token losses are averaged")
    scale_rewards: bool = Field(True, description="divide advantages by the group's reward std "
                                                  "(--no-scale-rewards: Dr. GRPO)")
    lr: float = Field(1e-6, gt=0, description="peak learning rate")
    eval_fraction: float = Field(0.0, ge=0, lt=1, description="(unused: GRPO reports rewards, not eval loss)")
    seq_len: int = Field(512, gt=1, description="maximum prompt length in tokens")
    engine_dtype: str = Field("auto", description="rollout engine dtype (auto: bf16 on CUDA, fp32 on CPU)")

    @field_validator("reward", mode="before")
    @classmethod
    def _flatten_reward(cls, v: Any) -> list[str]:
        """`--reward A B` or `--reward A,B` (the CLI gives a list of lists)."""
        items = v if isinstance(v, list) else [v]
        return [str(y) for x in items for y in (x if isinstance(x, list) else [x]) if str(y).strip()]
class DistillConfig(TrainConfig):
    """`lmsmith train distill`: the student (--student, or --model) learns the teacher's token distributions."""

    task: Literal["pretrain", "sft", "dpo", "rm", "grpo", "distill"] = "distill"
    teacher: str | None = Field(None, description="teacher model ref (same tokenizer as the student)")
    student: str | None = Field(None, description="student model ref to start from (same as --model)")
    kd: Literal["forward", "reverse", "jsd"] = Field("forward", description="divergence: forward KL (mass-covering), "
                                                                           "reverse KL (mode-seeking) or JSD")
    alpha: float = Field(0.5, ge=0, le=1, description="weight of the distillation term; 1 - alpha goes to "
                                                      "cross-entropy on the data's labels")
    temperature: float = Field(1.0, gt=0, description="softmax temperature of both distributions (loss x T^2)")
    on_policy: float = Field(0.0, ge=0, le=1, description="share of batches where the student samples its own "
                                                          "continuation and the teacher scores it (GKD)")
    on_policy_tokens: int = Field(64, gt=0, description="tokens the student samples per on-policy sequence")
    data_format: Literal["auto", "text", "chat"] = Field("auto", description="text (packed, like pretrain) or chat "
                                                                            "JSONL (like sft); auto: by content")
    epochs: float = Field(1.0, gt=0, description="passes over the data when --steps is not given")

    @model_validator(mode="after")
    def _student_is_model(self) -> "DistillConfig":
        if self.student and self.model and self.student != self.model:
            raise ValueError("--student and --model name different models; give one")
        if self.student and not self.model:
            self.model = self.student
        return self
