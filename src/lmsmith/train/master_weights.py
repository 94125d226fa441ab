"""bf16 weights, fp32 master weights in the optimizer: AdamW that reads the bf16 gradient, updates the fp32 master
weight and moments, and writes the bf16 weight the next forward reads, in one pass over memory.

Why: with fp32 weights under autocast, every step casts each weight to bf16 for the forward (and again where the
backward needs it) and each bf16 weight gradient to fp32 — ~12 bytes a parameter moved that no math needs. Here
forward and backward run on bf16 weights directly while the update stays exact in fp32. Memory is the same (2 + 4
bytes of weights and 2 of gradient against 4 + 4). At one micro-batch a step the gradient is the same bf16 GEMM
output either way, so only the residual stream changes: it is carried in bf16, as under FSDP2's bf16 parameters,
Megatron or torchtitan. Gradient accumulation would sum in bf16, so `applies` keeps it to one micro-batch a step.

The master copy lives in the optimizer state (`master`), so checkpoints resume exactly; `master_state_dict` gives
the fp32 weights for the saved model."""

from __future__ import annotations

import math
import os
from typing import Any

import torch
from torch import nn

try:  # Triton ships with CUDA builds of torch; the CPU path never needs it
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - CPU-only installs
    triton = None

BLOCK = 2048


def applies(explicit: bool | None, *, device: torch.device, compute_dtype: torch.dtype | None, full: bool,
            world: int, grad_accum: int, qat: bool, lm_task: bool) -> bool:
    """`--master-weights` resolved: auto (None) = on for bf16 full fine-tuning of a language model on one CUDA
    process with one micro-batch a step; an explicit yes is checked by setup.check_master_weights."""
    if explicit is not None:
        return explicit
    return (device.type == "cuda" and compute_dtype == torch.bfloat16 and full and world == 1 and grad_accum == 1
            and not qat and lm_task and os.environ.get("LMSMITH_MASTER_WEIGHTS", "1") != "0")


class MasterAdamW(torch.optim.Optimizer):
    """AdamW (torch's formula, decoupled weight decay) over bf16 parameters with fp32 master copies.

    Construction moves every trainable floating-point parameter to bf16 after copying it, unrounded, into its
    master. `grad_scale` (a 0-d device tensor) divides each gradient as it is read: the gradient clip folded in
    (see distributed.clip_grad_norm)."""

    takes_grad_scale = True

    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.grad_scale: torch.Tensor | None = None
        for group in self.param_groups:
            for p in group["params"]:
                st = self.state[p]
                st["master"] = p.detach().to(torch.float32, copy=True)
                st["exp_avg"] = torch.zeros_like(st["master"])
                st["exp_avg_sq"] = torch.zeros_like(st["master"])
                st["step"] = torch.zeros((), dtype=torch.float32)
                p.data = p.data.to(torch.bfloat16)

    @torch.no_grad()
    def step(self, closure=None):
        loss = closure() if closure is not None else None
        scale = self.grad_scale
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                st["step"] += 1
                n = float(st["step"])
                update(p, p.grad, st["master"], st["exp_avg"], st["exp_avg_sq"], scale, lr=float(group["lr"]),
                       beta1=beta1, beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                       bc1=1 - beta1 ** n, bc2=1 - beta2 ** n)
        return loss

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch casts every floating-point state tensor to its parameter's dtype on load, which would round the
        fp32 master and moments to bf16: put the saved fp32 tensors back afterwards."""
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        keep = {i: {k: v for k, v in state_dict["state"].get(i, {}).items() if torch.is_tensor(v) and k != "step"}
                for i in saved_ids}
        super().load_state_dict(state_dict)
        params = [p for g in self.param_groups for p in g["params"]]
        for i, p in zip(saved_ids, params):
            for k, v in keep[i].items():
                self.state[p][k] = v.to(device=p.device, dtype=torch.float32)

    def master_state_dict(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The model's state dict (CPU) with each trained weight replaced by its fp32 master (tied names too)."""
        masters = {id(p): self.state[p]["master"].detach().cpu() for g in self.param_groups for p in g["params"]}
        sd = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        for name, p in model.named_parameters(remove_duplicate=False):
            if id(p) in masters and name in sd:
                sd[name] = masters[id(p)]  # one tensor for tied names: saved once
        return sd


def update(w: torch.Tensor, g: torch.Tensor, master: torch.Tensor, m: torch.Tensor, v: torch.Tensor,
           scale: torch.Tensor | None, *, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float,
           bc1: float, bc2: float) -> None:
    """One AdamW update of one tensor, in place: the Triton kernel on CUDA (or the interpreter), else torch ops."""
    if triton is not None and (w.is_cuda or os.environ.get("TRITON_INTERPRET") == "1") and _contiguous(w, g, master):
        n = w.numel()
        _adamw_kernel[(triton.cdiv(n, BLOCK),)](
            w, g, master, m, v, scale if scale is not None else _no_scale(w.device), n, beta1, beta2, eps,
            1 - lr * weight_decay, lr / bc1, math.sqrt(bc2), HAS_SCALE=scale is not None, BLOCK=BLOCK)
        return
    gf = g.float() if scale is None else g.float() / scale
    master.mul_(1 - lr * weight_decay)
    m.mul_(beta1).add_(gf, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(gf, gf, value=1 - beta2)
    master.addcdiv_(m, v.sqrt().div_(math.sqrt(bc2)).add_(eps), value=-lr / bc1)
    w.copy_(master)


_NO_SCALE: dict[torch.device, torch.Tensor] = {}


def _no_scale(device: torch.device) -> torch.Tensor:
    """A placeholder for the unused scale pointer (not an alias of a real argument: the interpreter copies each
    argument in and out, so an alias would be written back stale)."""
    if device not in _NO_SCALE:
        _NO_SCALE[device] = torch.ones((), device=device)
    return _NO_SCALE[device]


def _contiguous(*ts: torch.Tensor) -> bool:
    return all(t.is_contiguous() for t in ts)


if triton is not None:

    @triton.jit
    def _adamw_kernel(w_ptr, g_ptr, master_ptr, m_ptr, v_ptr, scale_ptr, n, beta1, beta2, eps, decay, step_size,
                      bc2_sqrt, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
        block = tl.program_id(0).to(tl.int64)
        offs = block * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n
        g = tl.load(g_ptr + offs, mask=mask, other=0.0).to(tl.float32)
        if HAS_SCALE:
            g = g / tl.load(scale_ptr)
        p = tl.load(master_ptr + offs, mask=mask, other=0.0)
        m = tl.load(m_ptr + offs, mask=mask, other=0.0)
        v = tl.load(v_ptr + offs, mask=mask, other=0.0)
        p = p * decay
        m = beta1 * m + (1 - beta1) * g
        v = beta2 * v + (1 - beta2) * g * g
        p = p - step_size * m / (tl.sqrt(v) / bc2_sqrt + eps)
        tl.store(master_ptr + offs, p, mask=mask)
        tl.store(m_ptr + offs, m, mask=mask)
        tl.store(v_ptr + offs, v, mask=mask)
        tl.store(w_ptr + offs, p.to(w_ptr.dtype.element_ty, fp_downcast_rounding="rtne"), mask=mask)
