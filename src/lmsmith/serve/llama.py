"""Native Llama-family decoder (Llama 2/3.x, SmolLM/SmolLM2, Mistral, Qwen2/2.5) over the paged KV cache.

Numerics follow transformers' reference implementation (fp32 RMSNorm, the same RoPE tables) so greedy decoding
matches `generate` token for token. q/k/v and gate/up projections are fused after loading for fewer matmuls.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmsmith.serve import cpu_kernels
from lmsmith.serve import fused as F2
from lmsmith.serve.attention import AttentionMetadata, decode_attention_cpu, paged_attention
from lmsmith.serve.paged_decode import decode_attention, one_launch_decode_attention

SUPPORTED_MODEL_TYPES = {"llama", "mistral", "qwen2"}
STATIC_ROPE_TYPES = {"default", "linear", "llama3", "yarn"}


@dataclass
class ModelSpec:
    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    qkv_bias: bool
    o_bias: bool
    mlp_bias: bool
    tie_word_embeddings: bool
    sliding_window: int | None
    max_position_embeddings: int


def unsupported_reason(cfg: Any) -> str | None:
    """Why the native implementation cannot run this HF config (None = it can)."""
    mt = getattr(cfg, "model_type", None)
    if mt not in SUPPORTED_MODEL_TYPES:
        return f"architecture '{mt}' has no native implementation (native: {', '.join(sorted(SUPPORTED_MODEL_TYPES))})"
    if getattr(cfg, "hidden_act", "silu") != "silu":
        return f"activation {cfg.hidden_act} is not implemented natively"
    rope = getattr(cfg, "rope_parameters", None) or getattr(cfg, "rope_scaling", None) or {}
    rtype = rope.get("rope_type", rope.get("type", "default")) if isinstance(rope, dict) else "default"
    if rtype not in STATIC_ROPE_TYPES:
        return f"RoPE type '{rtype}' is not implemented natively"
    return None


def spec_from_config(cfg: Any) -> ModelSpec:
    heads = cfg.num_attention_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    qwen = cfg.model_type == "qwen2"
    window = getattr(cfg, "sliding_window", None)
    if qwen and not getattr(cfg, "use_sliding_window", False):
        window = None
    return ModelSpec(
        model_type=cfg.model_type, vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size, num_layers=cfg.num_hidden_layers, num_heads=heads,
        num_kv_heads=getattr(cfg, "num_key_value_heads", None) or heads, head_dim=head_dim,
        rms_norm_eps=cfg.rms_norm_eps, qkv_bias=qwen or bool(getattr(cfg, "attention_bias", False)),
        o_bias=bool(getattr(cfg, "attention_bias", False)) and not qwen, mlp_bias=bool(getattr(cfg, "mlp_bias", False)),
        tie_word_embeddings=bool(getattr(cfg, "tie_word_embeddings", False)), sliding_window=window,
        max_position_embeddings=cfg.max_position_embeddings,
    )


def rope_tables(cfg: Any, spec: ModelSpec, max_len: int, dtype: torch.dtype, device) -> tuple[torch.Tensor, torch.Tensor]:
    """cos/sin `[max_len, head_dim]`, computed exactly as transformers does (fp32, then cast)."""
    rope = getattr(cfg, "rope_parameters", None) or {}
    rtype = rope.get("rope_type", "default") if isinstance(rope, dict) else "default"
    if rtype == "default":
        base = rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))
        dim = spec.head_dim
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float) / dim))
        scaling = 1.0
    else:
        from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

        inv_freq, scaling = ROPE_INIT_FUNCTIONS[rtype](cfg, None)
    pos = torch.arange(max_len, dtype=torch.float)
    freqs = pos[:, None] * inv_freq.float()[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return (emb.cos() * scaling).to(device=device, dtype=dtype), (emb.sin() * scaling).to(device=device, dtype=dtype)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * h.to(dtype)


class Attention(nn.Module):
    def __init__(self, s: ModelSpec):
        super().__init__()
        self.s = s
        self.q_proj = nn.Linear(s.hidden_size, s.num_heads * s.head_dim, bias=s.qkv_bias)
        self.k_proj = nn.Linear(s.hidden_size, s.num_kv_heads * s.head_dim, bias=s.qkv_bias)
        self.v_proj = nn.Linear(s.hidden_size, s.num_kv_heads * s.head_dim, bias=s.qkv_bias)
        self.o_proj = nn.Linear(s.num_heads * s.head_dim, s.hidden_size, bias=s.o_bias)
        self.scale = s.head_dim ** -0.5
        self.qkv_w: torch.Tensor | None = None
        self.qkv_b: torch.Tensor | None = None
        self.qkv_proj: nn.Module | None = None  # quantized checkpoints: one fused quantized linear

    def fuse(self) -> None:
        if type(self.q_proj) is not nn.Linear:  # quantized: concatenated along the output dim, still quantized
            from lmsmith.quant import concat_linears

            self.qkv_proj = concat_linears([self.q_proj, self.k_proj, self.v_proj])
            del self.q_proj, self.k_proj, self.v_proj
            return
        self.qkv_w = torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]).detach()
        if self.s.qkv_bias:
            self.qkv_b = torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]).detach()
        del self.q_proj, self.k_proj, self.v_proj

    def qkv(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.qkv_w, self.qkv_b) if self.qkv_proj is None else self.qkv_proj(x)

    def forward_fused(self, x, cos, sin, k_cache, v_cache, meta: AttentionMetadata) -> torch.Tensor:
        """cos/sin: the full tables; RoPE and the K/V cache write are one kernel."""
        s = self.s
        qkv = self.qkv(x)
        if meta.decode_only and one_launch_decode_attention(x.device):
            o = decode_attention(qkv, cos, sin, meta.positions, meta.slot_mapping, k_cache, v_cache,
                                 meta.decode_block_tables, meta.decode_context_lens, s.num_heads, s.num_kv_heads,
                                 s.head_dim, self.scale, meta.sliding_window)
            return self.o_proj(o.reshape(x.shape[0], -1))
        q, k, v = F2.rope_and_cache(qkv, cos, sin, meta.positions, meta.slot_mapping, k_cache, v_cache,
                                    s.num_heads, s.num_kv_heads, s.head_dim)
        o = paged_attention(q, k, v, k_cache, v_cache, meta, self.scale, write=False)
        return self.o_proj(o.reshape(x.shape[0], -1))

    def forward(self, x, cos, sin, k_cache, v_cache, meta: AttentionMetadata) -> torch.Tensor:
        s = self.s
        t = x.shape[0]
        qkv = self.qkv(x)
        q, k, v = qkv.split([s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim, s.num_kv_heads * s.head_dim], -1)
        q = q.view(t, s.num_heads, s.head_dim)
        k = k.view(t, s.num_kv_heads, s.head_dim)
        v = v.view(t, s.num_kv_heads, s.head_dim)
        cos, sin = cos[:, None, :], sin[:, None, :]
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        o = paged_attention(q, k, v, k_cache, v_cache, meta, self.scale)
        return self.o_proj(o.reshape(t, -1))


class MLP(nn.Module):
    def __init__(self, s: ModelSpec):
        super().__init__()
        self.gate_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=s.mlp_bias)
        self.up_proj = nn.Linear(s.hidden_size, s.intermediate_size, bias=s.mlp_bias)
        self.down_proj = nn.Linear(s.intermediate_size, s.hidden_size, bias=s.mlp_bias)
        self.gu_w: torch.Tensor | None = None
        self.gu_b: torch.Tensor | None = None
        self.gate_up_proj: nn.Module | None = None  # quantized checkpoints

    def fuse(self) -> None:
        if type(self.gate_proj) is not nn.Linear:
            from lmsmith.quant import concat_linears

            self.gate_up_proj = concat_linears([self.gate_proj, self.up_proj])
            del self.gate_proj, self.up_proj
            return
        self.gu_w = torch.cat([self.gate_proj.weight, self.up_proj.weight]).detach()
        if self.gate_proj.bias is not None:
            self.gu_b = torch.cat([self.gate_proj.bias, self.up_proj.bias]).detach()
        del self.gate_proj, self.up_proj

    def gate_up(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.gu_w, self.gu_b) if self.gate_up_proj is None else self.gate_up_proj(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)

    def forward_fused(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F2.silu_mul(self.gate_up(x)))


class DecoderLayer(nn.Module):
    def __init__(self, s: ModelSpec):
        super().__init__()
        self.self_attn = Attention(s)
        self.mlp = MLP(s)
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)

    def forward(self, x, cos, sin, k_cache, v_cache, meta):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, k_cache, v_cache, meta)
        return x + self.mlp(self.post_attention_layernorm(x))


class Backbone(nn.Module):
    def __init__(self, s: ModelSpec):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(s) for _ in range(s.num_layers))
        self.norm = RMSNorm(s.hidden_size, s.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    """Parameter names match the HF checkpoints, so the safetensors load as they are."""

    def __init__(self, s: ModelSpec):
        super().__init__()
        self.spec = s
        self.model = Backbone(s)
        self.lm_head = nn.Linear(s.hidden_size, s.vocab_size, bias=False)
        self.fused = False  # set by the runner on CUDA in bf16/fp16: Triton kernels for the element-wise stages
        self.lean_cpu_decode = True  # decode-only CPU steps take `_forward_decode_cpu` (False: the general path)
        self._cpu_fns: tuple | None = None  # (dtype, bound linears) of that step
        self._cpu_plan: tuple | None = None  # (bound linears, cpu_kernels.DecodePlan) of the owned kernels' step

    def fuse(self) -> None:
        for layer in self.model.layers:
            layer.self_attn.fuse()
            layer.mlp.fuse()

    def forward(self, input_ids: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata, logit_rows: torch.Tensor | None) -> torch.Tensor:
        """input_ids [T]; cos/sin [T, head_dim]; kv_cache [layers, 2, blocks, block_size, kv_heads, d].
        Returns float32 logits for `logit_rows` only (None: every row)."""
        if self.fused:
            return self._forward_fused(input_ids, cos, sin, kv_cache, meta, logit_rows)
        if meta.host_tables is not None and self.lean_cpu_decode:
            return self._forward_decode_cpu(input_ids, cos, sin, kv_cache, meta, logit_rows)
        x = self.model.embed_tokens(input_ids)
        for i, layer in enumerate(self.model.layers):
            x = layer(x, cos, sin, kv_cache[i, 0], kv_cache[i, 1], meta)
        h = self.model.norm(x if logit_rows is None else x[logit_rows])
        return self.lm_head(h).float()

    def _forward_fused(self, input_ids, cos, sin, kv_cache, meta, logit_rows):
        """Same math with the residual adds folded into the next RMSNorm: x carries the residual stream."""
        layers = self.model.layers
        x = self.model.embed_tokens(input_ids)
        h, x = F2.add_rmsnorm(x, None, layers[0].input_layernorm.weight, layers[0].input_layernorm.eps)
        for i, layer in enumerate(layers):
            a = layer.self_attn.forward_fused(h, cos, sin, kv_cache[i, 0], kv_cache[i, 1], meta)
            ln = layer.post_attention_layernorm
            h, x = F2.add_rmsnorm(a, x, ln.weight, ln.eps)
            m = layer.mlp.forward_fused(h)
            ln = layers[i + 1].input_layernorm if i + 1 < len(layers) else self.model.norm
            h, x = F2.add_rmsnorm(m, x, ln.weight, ln.eps)
        if logit_rows is not None:
            h = h[logit_rows]
        return self.lm_head(h).float()

    def _forward_decode_cpu(self, input_ids, cos, sin, kv_cache, meta, logit_rows):
        """A decode-only step on the CPU (one new token per row), same math as `forward` in fewer ops.

        On a CPU every small op costs a few microseconds of dispatch once the matmuls have streamed their weights
        through the caches, and the general path spends ~55 per layer (gathers, masks, SDPA set-up, rotate_half's
        cat) against 4 matmuls: at batch 1 that was as long as reading the int4 weights. Here a layer is ~30 ops:
        fp32 RMSNorm in one kernel (bit-identical to `RMSNorm`), RoPE of q and k at once with a roll and a
        pre-signed sin (bit-identical to rotate_half), the K/V write, attention as two batched matmuls on a view
        of the cache, and the linears as kernel calls bound once (`_cpu_linears`)."""
        s = self.spec
        b, qd, kd = input_ids.shape[0], s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim
        half = s.head_dim // 2
        fns = self._cpu_linears(cos.dtype)
        if self._cpu_fused_ok(fns, kv_cache, b):
            return self._forward_decode_cpu_fused(input_ids, cos, sin, kv_cache, meta, logit_rows, fns)
        sign = torch.ones(s.head_dim, dtype=sin.dtype)
        sign[:half] = -1
        cos, sin = cos[:, None, :], (sin * sign)[:, None, :]
        slots = meta.slot_mapping
        flat = kv_cache.view(kv_cache.shape[0], 2, -1, s.num_kv_heads, s.head_dim).unbind(0)  # [layer] -> (k, v) slots
        x = self.model.embed_tokens(input_ids)
        layers = self.model.layers
        for i, layer in enumerate(layers):
            attn = layer.self_attn
            qkv_fn, o_fn, gu_fn, down_fn = fns[i]
            kc, vc = flat[i]
            qkv = qkv_fn(_rms(x, layer.input_layernorm))
            qk = qkv[:, :qd + kd].view(b, -1, s.head_dim)
            qk = (qk * cos).add_(torch.roll(qk, half, -1).mul_(sin))
            kc.index_copy_(0, slots, qk[:, s.num_heads:])
            vc.index_copy_(0, slots, qkv[:, qd + kd:].view(b, -1, s.head_dim))
            heads = [decode_attention_cpu(qk[r, :s.num_heads], kc, vc, meta.host_tables[r], meta.host_lens[r],
                                          attn.scale, meta.sliding_window, meta.block_size) for r in range(b)]
            o = heads[0].view(1, qd) if b == 1 else torch.stack(heads).view(b, qd)
            x = x + o_fn(o)
            g, u = gu_fn(_rms(x, layer.post_attention_layernorm)).chunk(2, dim=-1)
            x = x + down_fn(F.silu(g).mul_(u))
        h = _rms(x if logit_rows is None else x[logit_rows], self.model.norm)
        return fns[-1](h).float()

    def _cpu_fused_ok(self, fns: list, kv_cache: torch.Tensor, rows: int) -> bool:
        """The owned kernels' fused step applies: fp32, every layer's linears bound to them, few rows."""
        return (kv_cache.dtype == torch.float32 and rows <= cpu_kernels.MAX_ROWS and kv_cache.is_contiguous()
                and all(hasattr(fn, "spec") for layer in fns[:-1] for fn in layer))

    def _forward_decode_cpu_fused(self, input_ids, cos, sin, kv_cache, meta, logit_rows, fns):
        """The decode step as one owned-kernel call (`cpu_kernels.DecodePlan`): per layer RMSNorm folded into the
        qkv and gate_up GEMVs' activation quantization, RoPE + K/V write + attention as one op, the residual adds
        into the o and down GEMVs' output, SiLU(gate) * up into the down GEMV's input; no Python between them."""
        s = self.spec
        if self._cpu_plan is None or self._cpu_plan[0] is not fns:
            layers = self.model.layers
            norms = [(n.weight, n.eps) for l in layers for n in (l.input_layernorm, l.post_attention_layernorm)]
            head = fns[-1] if hasattr(fns[-1], "spec") else None
            self._cpu_plan = (fns, cpu_kernels.DecodePlan(fns[:-1], norms + [(self.model.norm.weight,
                                                                             self.model.norm.eps)], head))
        plan = self._cpu_plan[1]
        caches = list(kv_cache.flatten(0, 1).unbind(0))  # [k0, v0, k1, v1, ...]
        x = self.model.embed_tokens(input_ids).float()
        out = plan(x, caches, cos, sin, meta.slot_mapping, meta.decode_block_tables, meta.decode_context_lens,
                   s.num_heads, s.num_kv_heads, s.head_dim, self.model.layers[0].self_attn.scale, meta.sliding_window,
                   meta.block_size)
        if logit_rows is not None and logit_rows.numel() != out.shape[0]:
            out = out[logit_rows]
        return out if plan.head else fns[-1](out).float()

    def _cpu_linears(self, dtype: torch.dtype) -> list:
        """Per layer (qkv, o, gate_up, down) and then the lm_head, as direct kernel calls bound once: a
        module's forward re-dispatches on every call, which at batch 1 costs as much as the matmul."""
        if self._cpu_fns is None or self._cpu_fns[0] != dtype:
            def bind(mod: nn.Module, weight: torch.Tensor | None = None, bias: torch.Tensor | None = None):
                if mod is not None and (mod._forward_hooks or mod._forward_pre_hooks):
                    return mod  # e.g. tensor parallelism's all-reduce after row-parallel projections
                if mod is None or type(mod) is nn.Linear:
                    w, b = (weight, bias) if mod is None else (mod.weight, mod.bias)
                    return lambda x: F.linear(x, w, b)
                kernel = getattr(mod, "cpu_kernel", None)
                fn = (kernel(dtype) if kernel else None) or mod
                return cpu_kernels.bind(mod, dtype, fn) or fn  # owned int4/int8 GEMVs where they build

            fns = [(bind(l.self_attn.qkv_proj, l.self_attn.qkv_w, l.self_attn.qkv_b), bind(l.self_attn.o_proj),
                    bind(l.mlp.gate_up_proj, l.mlp.gu_w, l.mlp.gu_b), bind(l.mlp.down_proj)) for l in self.model.layers]
            self._cpu_fns = (dtype, fns + [bind(self.lm_head)])
        return self._cpu_fns[1]


def _rms(x: torch.Tensor, norm: RMSNorm) -> torch.Tensor:
    """`norm(x)` in one fused kernel plus the weight: fp32 statistics, rounded to x's dtype before the weight."""
    if x.dtype == torch.float32:
        return F.rms_norm(x, (x.shape[-1],), norm.weight, norm.eps)
    return norm.weight * F.rms_norm(x.float(), (x.shape[-1],), None, norm.eps).to(x.dtype)
