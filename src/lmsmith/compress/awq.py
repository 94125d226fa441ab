"""AWQ (Lin et al., 2023): activation-aware weight quantization.

A few input channels carry much larger activations than the rest; their weights matter most. AWQ
multiplies those weight columns by a per-channel scale s (so rounding hurts them less) and divides the
layer's input by s, folding 1/s into the operation that produces the input (an RMSNorm's weight, or
the rows of the previous linear). The math is unchanged in full precision; after rounding, the error
shifts away from the salient channels. s = mean|x|^alpha, alpha grid-searched per group of linears that
share an input to minimize their output error on the calibration tokens. Then each weight's groups are
clipped to the range (a shrink of its min/max) that minimizes that group's output error.
The result is ordinary int4/int8 storage (`grid.to_module`), so kernels and loaders need nothing new.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from lmsmith.compress.grid import Grid

N_GRID = 20
MAX_SHRINK = 0.5
SEARCH_TOKENS = 512  # calibration tokens used by the alpha and clip searches (a seeded subset)
# The up_proj -> down_proj group (scales folded into up_proj's rows) is searched like the others and always beats
# round-to-nearest on down_proj's own outputs, yet end to end it hurt on every setting measured (default model,
# 8 x 256 calibration tokens, held-out perplexity with / without it): 3-bit Czech 6,903 / 202 (RTN 637), 4-bit
# Czech 100.1 / 88.3, 4-bit English 35.6 / 33.6. down_proj's inputs carry the massive-activation channels
# (scale spans up to 350x), so its scales trade the whole group's precision for a few tokens' outputs. Off by
# default; down_proj is still clipped.
SCALE_DOWN = False


@dataclass
class ScaleGroup:
    """Linears reading one input, and the op that produces it (where 1/s is folded)."""

    prev: nn.Module  # an RMSNorm/LayerNorm or an nn.Linear
    names: list[str]
    linears: list[nn.Linear]


def find(layer: nn.Module, *names: str) -> nn.Module | None:
    for n in names:
        m = layer.get_submodule(n) if _has(layer, n) else None
        if m is not None:
            return m
    return None


def _has(layer: nn.Module, name: str) -> bool:
    try:
        layer.get_submodule(name)
        return True
    except AttributeError:
        return False


def scale_groups(layer: nn.Module) -> list[ScaleGroup]:
    """The foldable groups of a Llama-style decoder layer (Llama, Mistral, Qwen2, Gemma, SmolLM, ...).

    Layers of other shapes are still clipped (and quantized) but get no scales."""
    groups: list[ScaleGroup] = []
    attn_norm = find(layer, "input_layernorm")
    qkv = [n for n in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj") if _has(layer, n)]
    if attn_norm is not None and len(qkv) == 3:
        groups.append(ScaleGroup(attn_norm, qkv, [layer.get_submodule(n) for n in qkv]))
    if _has(layer, "self_attn.v_proj") and _has(layer, "self_attn.o_proj"):
        v, o = layer.get_submodule("self_attn.v_proj"), layer.get_submodule("self_attn.o_proj")
        if v.out_features == o.in_features:  # no GQA head sharing: o's input channels are v's outputs
            groups.append(ScaleGroup(v, ["self_attn.o_proj"], [o]))
    mlp_norm = find(layer, "pre_feedforward_layernorm", "post_attention_layernorm")
    gu = [n for n in ("mlp.gate_proj", "mlp.up_proj") if _has(layer, n)]
    if mlp_norm is not None and len(gu) == 2:
        groups.append(ScaleGroup(mlp_norm, gu, [layer.get_submodule(n) for n in gu]))
    if _has(layer, "mlp.up_proj") and _has(layer, "mlp.down_proj"):
        groups.append(ScaleGroup(layer.get_submodule("mlp.up_proj"), ["mlp.down_proj"],
                                 [layer.get_submodule("mlp.down_proj")]))
    return groups


@torch.no_grad()
def fold_scales(group: ScaleGroup, s: torch.Tensor) -> None:
    """W[:, j] *= s_j for the group's linears; the input producer divides channel j by s_j."""
    prev = group.prev
    if isinstance(prev, nn.Linear):
        prev.weight.div_(s[:, None].to(prev.weight.dtype))
        if prev.bias is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    elif "gemma" in type(prev).__name__.lower():  # Gemma's RMSNorm scales by (1 + weight)
        prev.weight.copy_((1.0 + prev.weight.float()) / s - 1.0)
    else:
        prev.weight.div_(s.to(prev.weight.dtype))
        if getattr(prev, "bias", None) is not None:
            prev.bias.div_(s.to(prev.bias.dtype))
    for lin in group.linears:
        lin.weight.mul_(s[None, :].to(lin.weight.dtype))


def subsample(x: torch.Tensor, n: int, seed: int = 0) -> torch.Tensor:
    if x.shape[0] <= n:
        return x
    g = torch.Generator().manual_seed(seed)
    return x[torch.randperm(x.shape[0], generator=g)[:n].to(x.device)]


@torch.no_grad()
def search_scale(x: torch.Tensor, linears: list[nn.Linear], grid: Grid, group_size: int | None,
                 n_grid: int = N_GRID) -> tuple[torch.Tensor, float, float]:
    """Best s = mean|x|^alpha (normalized) for the linears' joint output error; returns (s, alpha, error ratio
    best/alpha=0), alpha = 0 being plain round-to-nearest."""
    w = torch.cat([lin.weight.float() for lin in linears])
    ref = x @ w.t()
    x_mean = x.abs().mean(0).clamp(min=1e-6)
    best = (None, 0.0, float("inf"))
    base_err = None
    for i in range(n_grid):
        alpha = i / n_grid
        s = x_mean.pow(alpha)
        s = (s / (s.max() * s.min()).sqrt()).clamp(min=1e-4)
        wq = grid.fake_quant(w * s[None, :], group_size) / s[None, :]
        err = float((x @ wq.t() - ref).pow(2).mean())
        if base_err is None:
            base_err = err
        if err < best[2]:
            best = (s, alpha, err)
    return best[0], best[1], best[2] / max(base_err or 1.0, 1e-20)


@torch.no_grad()
def search_clip(x: torch.Tensor, w: torch.Tensor, grid: Grid, group_size: int | None,
                n_grid: int = N_GRID, max_shrink: float = MAX_SHRINK) -> torch.Tensor:
    """Per (output row, group) shrink of the weight range that minimizes that group's share of the output
    error; returns the clipped weight [N, K] (int8: one group per row)."""
    n, k = w.shape
    g = k if grid.method == "int8" else int(group_size or k)
    w = w.float()
    wg = w.reshape(n, k // g, g)
    xb = x.float().reshape(x.shape[0], k // g, g).transpose(0, 1).contiguous()  # [G, T, g]
    hi0, lo0 = wg.amax(-1, keepdim=True), wg.amin(-1, keepdim=True)
    best_err = torch.full((n, k // g), float("inf"), device=w.device)
    best_ratio = torch.ones(n, k // g, 1, device=w.device)
    for i in range(int(max_shrink * n_grid)):
        ratio = 1.0 - i / n_grid
        if grid.method == "int8" or grid.symmetric:
            m = torch.maximum(hi0.abs(), lo0.abs()) * ratio
            clipped = torch.maximum(torch.minimum(wg, m), -m)
        else:
            clipped = torch.minimum(torch.maximum(wg, lo0 * ratio), hi0 * ratio)
        dw = grid.fake_quant(clipped.reshape(n, k), group_size).reshape(n, k // g, g) - wg
        # each group's share of the output error: x_g @ (Q(w_g) - w_g)^T, batched over groups
        err = torch.bmm(xb, dw.permute(1, 2, 0)).pow(2).mean(1).t()  # [N, G]
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_ratio = torch.where(better[..., None], torch.full_like(best_ratio, ratio), best_ratio)
    if grid.method == "int8" or grid.symmetric:
        m = torch.maximum(hi0.abs(), lo0.abs()) * best_ratio
        out = torch.maximum(torch.minimum(wg, m), -m)
    else:
        out = torch.minimum(torch.maximum(wg, lo0 * best_ratio), hi0 * best_ratio)
    return out.reshape(n, k)


def awq_layer(layer: nn.Module, inputs: dict[str, torch.Tensor], grid: Grid, group_size: int | None,
              clip: bool = True, search_tokens: int = SEARCH_TOKENS, scale_down: bool = SCALE_DOWN) -> dict[str, float]:
    """Scale, then clip, the linears of one decoder layer in place. `inputs[name]`: that linear's
    calibration inputs [T, K] (taken before any scaling). Returns alpha per scaled group."""
    alphas: dict[str, float] = {}
    for group in scale_groups(layer):
        if group.names == ["mlp.down_proj"] and not scale_down:
            continue
        x = subsample(inputs[group.names[0]], search_tokens)
        s, alpha, _ = search_scale(x, group.linears, grid, group_size)
        fold_scales(group, s)
        alphas[",".join(group.names)] = alpha
        for name in group.names:  # the group's inputs are now x / s
            inputs[name] = inputs[name] / s[None, :]
    if clip:
        for name, lin in ((n, m) for n, m in layer.named_modules() if type(m) is nn.Linear and n in inputs):
            if name.endswith(("q_proj", "k_proj")):
                continue  # attention scores: clipping q/k measured worse in AWQ; their rounding is left as is
            x = subsample(inputs[name], search_tokens // 2)
            lin.weight.data.copy_(search_clip(x, lin.weight.data, grid, group_size).to(lin.weight.dtype))
    return alphas
