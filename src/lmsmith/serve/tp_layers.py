"""Tensor parallelism across the GPUs of one node (Megatron-style), for models that do not fit one GPU.

Each rank holds 1/tp of every large matrix:
- q/k/v and gate/up are column-parallel: rank r keeps its share of the attention heads and of the KV heads (so its
  KV cache holds only those heads and KV memory per GPU shrinks by tp) and its slice of the MLP's intermediate size;
- o_proj and down_proj are row-parallel: each rank multiplies its slice and one all-reduce sums the partial outputs
  (a bias is kept on rank 0 only, so it is added once);
- the embedding and lm_head are split by vocabulary: a rank embeds the token ids it owns (zeros elsewhere, then an
  all-reduce) and scores its rows of the vocabulary (then an all-gather gives every rank the full logits).
Norms and RoPE tables are replicated.

These layers sit below the runner (`NativeRunner` builds its shard with them); the processes that run the
ranks (`TPRunner`, workers) are serve/parallel.py.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from lmsmith.errors import LmsmithError
from lmsmith.serve.weights import weight_files

ROW_PARALLEL = ("o_proj", "down_proj")
COLUMN_PARALLEL = ("q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
VOCAB_PARALLEL = ("model.embed_tokens.weight", "lm_head.weight")


# ------------------------------------------------------------------------------------------------ the layout
@dataclasses.dataclass(frozen=True)
class TPContext:
    """This process's place in the tensor-parallel group (the default torch.distributed group)."""

    rank: int
    size: int
    backend: str

    def all_reduce(self, t: torch.Tensor) -> torch.Tensor:
        dist.all_reduce(t)
        return t

    def all_gather_last(self, t: torch.Tensor) -> torch.Tensor:
        """Concatenate every rank's `t` along the last dimension."""
        t = t.contiguous()
        if self.backend == "nccl":
            out = torch.empty((self.size * t.shape[0],) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
            dist.all_gather_into_tensor(out, t)  # the ranks' tensors one after another along dim 0
            parts = out.view((self.size,) + tuple(t.shape)).unbind(0)
        else:
            parts = [torch.empty_like(t) for _ in range(self.size)]
            dist.all_gather(parts, t)
        return torch.cat(parts, dim=-1)

    def vocab_range(self, vocab: int) -> tuple[int, int, int]:
        """(first id, end id, rows per rank): every rank holds `per` rows; the last one is zero-padded."""
        per = -(-vocab // self.size)
        start = min(self.rank * per, vocab)
        return start, min(start + per, vocab), per


def check_tp(spec: Any, tp: int, device: torch.device) -> None:
    """Clear errors for layouts we cannot split, before any process is started."""
    if isinstance(tp, bool) or not isinstance(tp, int) or tp < 1:
        raise LmsmithError(f"tensor_parallel_size must be a positive integer, got {tp!r}")
    if tp == 1:
        return
    for what, n in (("attention heads", spec.num_heads), ("KV heads", spec.num_kv_heads),
                    ("MLP intermediate size", spec.intermediate_size)):
        if n % tp:
            ok = [d for d in range(1, min(n, 16) + 1) if n % d == 0 and spec.num_heads % d == 0
                  and spec.num_kv_heads % d == 0 and spec.intermediate_size % d == 0]
            raise LmsmithError(f"the model's {n} {what} cannot be split evenly across tensor_parallel_size={tp}",
                               f"use a tensor parallel size that divides it: {', '.join(map(str, ok))}")
    if device.type == "cuda":
        n = torch.cuda.device_count()
        if tp > n:
            raise LmsmithError(f"tensor_parallel_size={tp} needs {tp} GPUs but {n} are visible",
                               f"use --tensor-parallel-size {max(n, 1)} or less, or check CUDA_VISIBLE_DEVICES")
        if device.index not in (None, 0):
            raise LmsmithError(f"with tensor parallelism the ranks use cuda:0..cuda:{tp - 1}, not {device}",
                               "pass device='cuda' and pick the GPUs with CUDA_VISIBLE_DEVICES")
    elif device.type != "cpu":
        raise LmsmithError(f"tensor parallelism runs on CUDA (NCCL) or CPU (gloo), not {device.type}")


def local_spec(spec: Any, tp: TPContext) -> Any:
    """The per-rank shapes: heads, KV heads and the intermediate size divided by tp (the vocabulary stays whole:
    the runner reports the full vocabulary; the vocab-parallel layers know their slice)."""
    return dataclasses.replace(spec, num_heads=spec.num_heads // tp.size, num_kv_heads=spec.num_kv_heads // tp.size,
                               intermediate_size=spec.intermediate_size // tp.size)


class VocabParallelEmbedding(nn.Module):
    """Rows [start, end) of the embedding; ids outside embed to zero and the all-reduce fills them in."""

    def __init__(self, tp: TPContext, vocab: int, hidden: int):
        super().__init__()
        self.tp = tp
        self.start, self.end, self.per = tp.vocab_range(vocab)
        self.weight = nn.Parameter(torch.empty(self.per, hidden), requires_grad=False)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        local = ids - self.start
        inside = (local >= 0) & (local < self.end - self.start)
        x = F.embedding(torch.where(inside, local, torch.zeros_like(local)), self.weight)
        return self.tp.all_reduce(x * inside.unsqueeze(-1).to(x.dtype))


class VocabParallelLMHead(nn.Module):
    """Scores this rank's vocabulary rows; the all-gather returns the full `[T, vocab]` logits on every rank."""

    def __init__(self, tp: TPContext, vocab: int, hidden: int):
        super().__init__()
        self.tp = tp
        self.vocab = vocab
        self.weight = nn.Parameter(torch.empty(tp.vocab_range(vocab)[2], hidden), requires_grad=False)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        logits = self.tp.all_gather_last(F.linear(h, self.weight))
        return logits[..., :self.vocab]


def parallelize(model: nn.Module, spec: Any, tp: TPContext) -> None:
    """Swap in the vocab-parallel embedding and lm_head (on the meta model, before weights are assigned)."""
    model.model.embed_tokens = VocabParallelEmbedding(tp, spec.vocab_size, spec.hidden_size)
    model.lm_head = VocabParallelLMHead(tp, spec.vocab_size, spec.hidden_size)


def add_reduce_hooks(model: nn.Module, tp: TPContext) -> None:
    """All-reduce after every row-parallel projection. Hooks, so any linear module (quantized ones too) works."""
    def reduce(_module, _args, out):
        return tp.all_reduce(out)

    for name, module in model.named_modules():
        if name.rsplit(".", 1)[-1] in ROW_PARALLEL:
            module.register_forward_hook(reduce)


def shard_index(name: str, shape: tuple[int, ...], tp: TPContext) -> tuple | str | None:
    """How rank `tp.rank` cuts checkpoint tensor `name`: an index tuple, "zero" (a bias kept on rank 0 only) or
    None (replicated)."""
    parts = name.split(".")
    module, param = (parts[-2], parts[-1]) if len(parts) >= 2 else ("", name)
    r, n = tp.rank, tp.size
    if name in VOCAB_PARALLEL:
        start, end, _ = tp.vocab_range(shape[0])
        return (slice(start, end),)
    if module in COLUMN_PARALLEL:
        per = shape[0] // n
        return (slice(r * per, (r + 1) * per),)
    if module in ROW_PARALLEL:
        if param == "bias":
            return None if r == 0 else "zero"
        per = shape[1] // n
        return (slice(None), slice(r * per, (r + 1) * per))
    return None


def cut_shard(name: str, shape: tuple[int, ...], take, tp: TPContext, dtype: torch.dtype) -> torch.Tensor:
    idx = shard_index(name, shape, tp)
    if idx is None:
        return take(None).to(dtype)
    if idx == "zero":
        return torch.zeros(shape, dtype=dtype)
    t = take(idx).to(dtype)
    if name in VOCAB_PARALLEL:
        per = tp.vocab_range(shape[0])[2]
        if t.shape[0] < per:  # the last rank's padding rows: never looked up, scored then cut off
            t = torch.cat([t, t.new_zeros(per - t.shape[0], *t.shape[1:])])
    return t.contiguous()


def shard_state_dict(mh: Any, tp: TPContext, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """This rank's slice of every weight; from safetensors only the slice is read (never the whole model)."""
    if mh.is_adapter:  # adapters are merged into their base on the host first (small models in practice)
        full = mh.state_dict(dtype)
        return {k: cut_shard(k, tuple(v.shape), lambda i, v=v: v if i is None else v[i], tp, dtype) for k, v in full.items()}
    from safetensors import safe_open


    sd: dict[str, torch.Tensor] = {}
    for f in weight_files(mh.base.dir):
        with safe_open(str(f), framework="pt", device="cpu") as fh:
            for name in fh.keys():
                sl = fh.get_slice(name)
                shape = tuple(sl.get_shape())
                sd[name] = cut_shard(name, shape, lambda i, sl=sl, name=name: fh.get_tensor(name) if i is None else sl[i],
                                tp, dtype)
    if "lm_head.weight" not in sd and "model.embed_tokens.weight" in sd:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    return sd


def dummy_weights(model: nn.Module, dtype: torch.dtype, device: torch.device, seed: int = 0) -> nn.Module:
    """Random weights created directly on the device (benchmarks of shapes we have no checkpoint for)."""
    model = model.to(dtype=dtype).to_empty(device=device)
    g = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.normal_(0.0, 0.02, generator=g)
    return model


# ------------------------------------------------------------------------------------------------ the processes
