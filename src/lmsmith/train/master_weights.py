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
# one launch per parameter group instead of one per weight (an experiment until measured on a GPU)
ONE_LAUNCH = os.environ.get("LMSMITH_MASTER_ONE_LAUNCH") == "1"


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
        self._tables: dict[int, GroupTables] = {}
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
        for gi, group in enumerate(self.param_groups):
            beta1, beta2 = group["betas"]
            if ONE_LAUNCH and self._one_launch(gi, group, scale):
                continue
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

    def _one_launch(self, gi: int, group: dict[str, Any], scale: torch.Tensor | None) -> bool:
        """The whole group in one launch (`LMSMITH_MASTER_ONE_LAUNCH=1`): the kernel finds each block's tensors
        through tables of addresses, as torch's multi-tensor apply does. False where it does not apply (a missing
        or non-contiguous gradient, no Triton): the caller takes the per-tensor launches."""
        params = group["params"]
        if triton is None or not params or any(p.grad is None or not p.grad.is_contiguous() or p.dtype != torch.bfloat16
                                               or p.grad.dtype != torch.bfloat16 for p in params):
            return False
        dev = params[0].device
        if not (dev.type == "cuda" or os.environ.get("TRITON_INTERPRET") == "1"):
            return False
        tables = self._tables.get(gi)
        if tables is None:
            tables = self._tables[gi] = GroupTables(params, [self.state[p] for p in params])
        steps = [self.state[p]["step"] for p in params]
        torch._foreach_add_(steps, 1)
        n = float(steps[0])
        beta1, beta2 = group["betas"]
        lr, bc1, bc2 = float(group["lr"]), 1 - beta1 ** n, 1 - beta2 ** n
        grads = torch.tensor([p.grad.data_ptr() for p in params], dtype=torch.int64)
        if dev.type == "cuda":  # pinned + non_blocking: no wait for the GPU (the host allocator keeps it until copied)
            grads = grads.pin_memory().to(dev, non_blocking=True)
        _adamw_tables_kernel[(tables.programs,)](
            tables.ptrs, grads, tables.numel, tables.tensor_of, tables.block_of, len(params),
            scale if scale is not None else _no_scale(dev), beta1, beta2, group["eps"],
            1 - lr * group["weight_decay"], lr / bc1, math.sqrt(bc2), HAS_SCALE=scale is not None, BLOCK=BLOCK)
        return True

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch casts every floating-point state tensor to its parameter's dtype on load, which would round the
        fp32 master and moments to bf16: put the saved fp32 tensors back afterwards."""
        saved_ids = [i for g in state_dict["param_groups"] for i in g["params"]]
        keep = {i: {k: v for k, v in state_dict["state"].get(i, {}).items() if torch.is_tensor(v) and k != "step"}
                for i in saved_ids}
        super().load_state_dict(state_dict)
        self._tables.clear()  # the state tensors are new: their addresses too
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


class GroupTables:
    """Device tables for one launch over a parameter group: the addresses of each tensor's weight, master and
    moments (rows of `ptrs`), sizes, and for every program the tensor and block it updates. The tensors must not
    move while the tables live (`MasterAdamW.load_state_dict` drops them)."""

    def __init__(self, params: list[torch.Tensor], states: list[dict[str, torch.Tensor]]):
        dev = params[0].device
        sizes = [p.numel() for p in params]
        blocks = torch.tensor([-(-n // BLOCK) for n in sizes])
        self.programs = int(blocks.sum())
        self.tensor_of = torch.repeat_interleave(torch.arange(len(params), dtype=torch.int32), blocks).to(dev)
        self.block_of = torch.cat([torch.arange(int(b), dtype=torch.int32) for b in blocks]).to(dev)
        self.numel = torch.tensor(sizes, dtype=torch.int64).to(dev)
        rows = [[p.data_ptr() for p in params]] + [[st[k].data_ptr() for st in states]
                                                    for k in ("master", "exp_avg", "exp_avg_sq")]
        self.ptrs = torch.tensor(rows, dtype=torch.int64).to(dev)
        self.keep = (params, states)  # what the addresses point into


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
        _adamw_block(w_ptr, g_ptr, master_ptr, m_ptr, v_ptr, scale_ptr, n, tl.program_id(0).to(tl.int64), beta1,
                     beta2, eps, decay, step_size, bc2_sqrt, HAS_SCALE, BLOCK)

    @triton.jit
    def _adamw_tables_kernel(ptrs, grads, numel, tensor_of, block_of, T, scale_ptr, beta1, beta2, eps, decay,
                             step_size, bc2_sqrt, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
        pid = tl.program_id(0)
        t = tl.load(tensor_of + pid)
        w_ptr = tl.load(ptrs + t).to(tl.pointer_type(tl.bfloat16))
        master_ptr = tl.load(ptrs + T + t).to(tl.pointer_type(tl.float32))
        m_ptr = tl.load(ptrs + 2 * T + t).to(tl.pointer_type(tl.float32))
        v_ptr = tl.load(ptrs + 3 * T + t).to(tl.pointer_type(tl.float32))
        g_ptr = tl.load(grads + t).to(tl.pointer_type(tl.bfloat16))
        _adamw_block(w_ptr, g_ptr, master_ptr, m_ptr, v_ptr, scale_ptr, tl.load(numel + t),
                     tl.load(block_of + pid).to(tl.int64), beta1, beta2, eps, decay, step_size, bc2_sqrt, HAS_SCALE,
                     BLOCK)

    @triton.jit
    def _adamw_block(w_ptr, g_ptr, master_ptr, m_ptr, v_ptr, scale_ptr, n, block, beta1, beta2, eps, decay,
                     step_size, bc2_sqrt, HAS_SCALE: tl.constexpr, BLOCK: tl.constexpr):
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
