"""Knowledge distillation: train a student to match a teacher's next-token distributions (logit KD),
as one more objective of the one training loop.

loss per target token = alpha * T² * D(teacher_T, student_T) + (1 - alpha) * cross-entropy(label)
with D one of
- forward  KL(p_t || p_s): mass-covering (the student spreads over everything the teacher allows);
- reverse  KL(p_s || p_t): mode-seeking (the student concentrates where the teacher is confident);
- jsd      the Jensen-Shannon divergence (β = ½), bounded and symmetric.
On-policy (GKD, Agarwal et al., 2024): for a share of the batches the student continues each sequence's
prompt with its own samples and the teacher scores those tokens, so the student learns on the
distribution it will actually generate from; those batches use the divergence alone (the sampled tokens
are no labels). Logit KD compares distributions token by token, so teacher and student must share a
tokenizer; anything else is refused before any model is loaded.
"""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmsmith.data.chat import IGNORE_INDEX
from lmsmith.errors import LmsmithError

KD_KINDS = ("forward", "reverse", "jsd")
MODEL_INPUTS = ("input_ids", "attention_mask", "position_ids")


def divergence(student_logits: torch.Tensor, teacher_logits: torch.Tensor, kind: str, temperature: float = 1.0
               ) -> torch.Tensor:
    """Per-row divergence [M] between teacher and student distributions from logits [M, V]."""
    ls = F.log_softmax(student_logits.float() / temperature, dim=-1)
    lt = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    if kind == "forward":
        return (lt.exp() * (lt - ls)).sum(-1)
    if kind == "reverse":
        return (ls.exp() * (ls - lt)).sum(-1)
    if kind == "jsd":
        lm = torch.logsumexp(torch.stack([ls, lt]), dim=0) - torch.log(torch.tensor(2.0, device=ls.device))
        return 0.5 * (lt.exp() * (lt - lm)).sum(-1) + 0.5 * (ls.exp() * (ls - lm)).sum(-1)
    raise LmsmithError(f"unknown --kd '{kind}'", f"use one of: {', '.join(KD_KINDS)}")


def check_tokenizers(teacher_ref: str, student_ref: str) -> None:
    """Logit distillation needs one vocabulary: the same token ids for the same strings."""
    from lmsmith.models import load_tokenizer

    t, s = load_tokenizer(teacher_ref), load_tokenizer(student_ref)
    tv, sv = t.get_vocab(), s.get_vocab()
    if tv != sv:
        raise LmsmithError(f"teacher and student use different tokenizers ({len(tv)} vs {len(sv)} tokens)",
                           "logit distillation needs the same tokenizer (it compares next-token distributions id by "
                           "id): pick a student that shares the teacher's tokenizer")


def load_teacher(ref: str, device: torch.device) -> nn.Module:
    from lmsmith.models import load_model

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    teacher = load_model(ref, dtype=dtype, device=str(device))
    teacher.requires_grad_(False)
    return teacher.eval()


class DistillLoss:
    """The loop's objective for `lmsmith train distill` (summed over target tokens, like CausalLMLoss)."""

    name = "distill"

    def __init__(self, teacher: nn.Module, kd: str = "forward", alpha: float = 0.5, temperature: float = 1.0,
                 on_policy: float = 0.0, on_policy_tokens: int = 64, pad_id: int = 0, seed: int = 0):
        if kd not in KD_KINDS:
            raise LmsmithError(f"unknown --kd '{kd}'", f"use one of: {', '.join(KD_KINDS)}")
        self.teacher, self.kd, self.alpha, self.t = teacher, kd, alpha, temperature
        self.on_policy, self.on_policy_tokens, self.pad_id = on_policy, on_policy_tokens, pad_id
        self.rng = random.Random(seed)

    def count(self, batch: dict[str, torch.Tensor]) -> int:
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())

    def __call__(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.on_policy and model.training and self.rng.random() < self.on_policy:
            return self.on_policy_loss(model, batch)
        inputs = {k: batch[k] for k in MODEL_INPUTS if k in batch}
        labels = batch["labels"][:, 1:]
        mask = labels != IGNORE_INDEX
        student = model(**inputs, use_cache=False).logits[:, :-1]
        with torch.no_grad():
            teacher = self.teacher(**inputs, use_cache=False).logits[:, :-1]
        v = min(student.shape[-1], teacher.shape[-1])  # embeddings padded past the shared vocabulary
        s, t = student[mask][:, :v].float(), teacher[mask][:, :v].float()
        loss = self.alpha * (self.t ** 2) * divergence(s, t, self.kd, self.t).sum()
        if self.alpha < 1:
            loss = loss + (1 - self.alpha) * F.cross_entropy(student[mask].float(), labels[mask], reduction="sum")
        return loss

    def on_policy_loss(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """The student continues each row's prompt (up to its first target token, or its first half); the
        divergence on the sampled tokens, scaled to the batch's target count so the loop's normalization holds."""
        labels = batch["labels"]
        ids = batch["input_ids"]
        rows = []
        for r in range(ids.shape[0]):
            targets = (labels[r] != IGNORE_INDEX).nonzero()
            start = int(targets[0]) if len(targets) and int(targets[0]) > 0 else max(1, ids.shape[1] // 2)
            rows.append(ids[r, :start])
        total = torch.zeros((), device=ids.device)
        n = 0
        model.eval()
        try:
            samples = []
            with torch.no_grad():
                for prompt in rows:
                    out = model.generate(prompt[None], max_new_tokens=self.on_policy_tokens, do_sample=True,
                                         temperature=1.0, top_k=0, pad_token_id=self.pad_id,
                                         use_cache=False)  # the training attention keeps no KV cache
                    samples.append((out[0], prompt.shape[0]))
        finally:
            model.train()
        for seq, start in samples:
            if seq.shape[0] <= start:
                continue
            student = model(input_ids=seq[None], use_cache=False).logits[0, start - 1:-1]
            with torch.no_grad():
                teacher = self.teacher(input_ids=seq[None], use_cache=False).logits[0, start - 1:-1]
            v = min(student.shape[-1], teacher.shape[-1])
            total = total + (self.t ** 2) * divergence(student[:, :v], teacher[:, :v], self.kd, self.t).sum()
            n += student.shape[0]
        return total / max(n, 1) * self.count(batch)


def make_distill_objective(cfg: Any, device: torch.device, pad_id: int) -> DistillLoss:
    teacher = load_teacher(cfg.teacher, device)
    return DistillLoss(teacher, cfg.kd, cfg.alpha, cfg.temperature, cfg.on_policy, cfg.on_policy_tokens, pad_id,
                       cfg.seed)


@torch.no_grad()
def mean_kl(teacher: nn.Module, student: nn.Module, ids: torch.Tensor, kind: str = "forward") -> float:
    """Mean per-token divergence of the student from the teacher on token windows `ids` [B, L]."""
    t = teacher(input_ids=ids).logits[:, :-1]
    s = student(input_ids=ids).logits[:, :-1]
    v = min(t.shape[-1], s.shape[-1])
    return float(divergence(s[..., :v].reshape(-1, v), t[..., :v].reshape(-1, v), kind).mean())
