"""Piecewise CUDA graphs for prefill and mixed steps (as vLLM's piecewise capture): host work per step ~ layers.

A prefill step run op by op is host-bound: ~12 launches per layer from Python (matmuls, Triton RMSNorm/RoPE/SwiGLU
kernels), so a lone 128-token prompt took 13 ms while its GPU work is ~2 ms. Everything in a layer except
attention works row by row on the flattened tokens, so it can be captured for a fixed token count and replayed
for any batch padded up to it; attention, whose shape depends on how the tokens split into prompts and decodes,
runs eagerly between the pieces. One step is then: fill one pinned buffer (token, position, cache slot per row),
one copy, and per layer a graph replay plus the attention call.

    piece 0        embed, RMSNorm, qkv projection, RoPE + K/V cache write of layer 0
    attention 0    eager (paged_attention, into a static buffer)
    piece i        o_proj of layer i-1, residual + RMSNorm, MLP, residual + RMSNorm, qkv + RoPE + cache of layer i
    ...
    piece L        o_proj and MLP of the last layer, the final norm; then the lm_head on the sampled rows (eager)

Token counts are bucketed (`PREFILL_BUCKETS`, up to the step's token budget); padded rows read token 0 at
position 0 and write their K/V into the scratch block. Each bucket is checked against the eager step when it is
captured (same inputs, logits within bf16 rounding) and dropped if it differs or fails. `capture=False` runs the
same pieces eagerly on padded buffers; on a CPU, `capture=True` stands an `EmulatedGraph` in for each graph
(replay = recompute into the captured output tensors): how the CPU tests exercise bucketing, padding, the piece
split, the capture order and the check.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F

from lmsmith.serve import fused as F2
from lmsmith.serve.attention import AttentionMetadata, PrefillChunk, paged_attention

log = logging.getLogger("lmsmith.serve")

PREFILL_BUCKETS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
MAX_GRAPH_TOKENS = 4096  # larger steps (rare: a budget above this) run eagerly; the GPU work dominates there


# ------------------------------------------------------------------------- the element-wise stages, eager
class ReferenceOps:
    """`fused`'s three stages in plain torch (the same math), for devices without Triton: the CPU tests."""

    @staticmethod
    def add_rmsnorm(x, residual, weight, eps):
        if residual is not None:
            x = x + residual
        h = F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)
        return weight * h, x

    @staticmethod
    def rope_and_cache(qkv, cos, sin, positions, slots, k_cache, v_cache, heads, kv_heads, head_dim):
        t = qkv.shape[0]
        half = head_dim // 2
        qk = qkv[:, :(heads + kv_heads) * head_dim].view(t, heads + kv_heads, head_dim).float()
        c, s = cos[positions].float()[:, None, :half], sin[positions].float()[:, None, :half]
        x1, x2 = qk[..., :half], qk[..., half:]
        qk = torch.cat([x1 * c - x2 * s, x2 * c + x1 * s], -1).to(qkv.dtype)
        q, k = qk[:, :heads].contiguous(), qk[:, heads:].contiguous()
        v = qkv[:, (heads + kv_heads) * head_dim:].view(t, kv_heads, head_dim)
        k_cache.view(-1, kv_heads, head_dim).index_copy_(0, slots, k)
        v_cache.view(-1, kv_heads, head_dim).index_copy_(0, slots, v)
        return q, k, v

    @staticmethod
    def silu_mul(gu):
        g, u = gu.chunk(2, dim=-1)
        return (F.silu(g.float()) * u.float()).to(gu.dtype)


def graphs_wanted(runner: Any) -> bool:
    """Prefill graphs for the native single-GPU runner on the fused bf16/fp16 path, unquantized (quantized
    kernels pick their layout by batch size), only with LMSMITH_PREFILL_GRAPHS=1: on the H100 every captured
    bucket failed its check against the eager step (relative error ~1.41), so the default stays eager."""
    return (runner.device.type == "cuda" and runner.model.fused and runner.quant is None and runner.tp is None
            and os.environ.get("LMSMITH_PREFILL_GRAPHS", "0") == "1")


class EmulatedGraph:
    """What a captured piece does on replay, on a device without CUDA graphs (the CPU tests of the capture path):
    read the tensors the previous piece left at capture time, recompute, and write the results into the tensors
    this piece left at capture time (a graph's outputs live at fixed addresses and are overwritten in place)."""

    def __init__(self, fn: Callable, b: "Bucket"):
        self.fn, self.b = fn, b
        self.inputs = dict(b.state)
        fn(b)
        self.outputs = dict(b.state)

    def replay(self) -> None:
        """As a CUDA graph: recompute from the captured inputs into the captured outputs, and nothing else. The
        caller's Python state (`b.state`) is left as it was: a real replay never rebinds a Python name, so code
        after it must read the tensors this piece wrote at capture (`Bucket.outs`), not whatever `b.state` holds."""
        b = self.b
        saved, b.state = b.state, dict(self.inputs)
        try:
            self.fn(b)
            for k, t in self.outputs.items():
                if b.state[k] is not t:
                    t.copy_(b.state[k])
        finally:
            b.state = saved

    def reset(self) -> None:
        pass


class Bucket:
    """The static buffers (and, when captured, the graphs) of one padded token count."""

    def __init__(self, n: int, runner: Any, pin: bool):
        s = runner.spec
        self.n = n
        self.host = torch.zeros(3, n, dtype=torch.long, pin_memory=pin)  # token, position, slot
        self.host_np = self.host.numpy()
        self.inp = torch.zeros(3, n, dtype=torch.long, device=runner.device)
        self.attn = torch.zeros(n, s.num_heads, s.head_dim, dtype=runner.dtype, device=runner.device)
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.state: dict[str, torch.Tensor] = {}
        # per captured piece, the state it left at capture: the tensors its replay rewrites (the attention after it
        # reads q/k/v from here), held so that no later capture in the shared pool can reuse their memory
        self.outs: list[dict[str, torch.Tensor]] = []
        # the host buffer is rewritten only once the GPU has read it (a step without sampling does not sync)
        self.copied = torch.cuda.Event() if pin else None


class PrefillGraphs:
    def __init__(self, runner: Any, max_tokens: int, scratch_block: int, capture: bool = True):
        self.runner = runner
        self.capture = capture
        self.ops = F2 if runner.device.type == "cuda" else ReferenceOps
        top = min(max_tokens, MAX_GRAPH_TOKENS)
        self.sizes = [b for b in PREFILL_BUCKETS if b < top] + [top]
        self.scratch_slot = scratch_block * runner.block_size
        self.buckets: dict[int, Bucket] = {}
        self.pool = None
        self.rejected: dict[int, str] = {}
        self.steps = 0  # steps run through this path (for the metrics)
        if capture:
            self.capture_all()
        else:
            for n in self.sizes:
                self.buckets[n] = Bucket(n, runner, pin=False)

    # -------------------------------------------------------------------- the pieces
    def pieces(self) -> list[Callable[[Bucket], None]]:
        """L + 1 functions of a bucket's state: piece i ends with layer i's q/k/v ready for attention."""
        r = self.runner
        m, s, ops = r.model, r.spec, self.ops
        layers = m.model.layers

        def qkv_rope(b: Bucket, i: int) -> None:
            attn = layers[i].self_attn
            kv = r.kv_cache
            b.state["q"], b.state["k"], b.state["v"] = ops.rope_and_cache(
                attn.qkv(b.state["h"]), r.cos, r.sin, b.inp[1], b.inp[2], kv[i, 0], kv[i, 1],
                s.num_heads, s.num_kv_heads, s.head_dim)

        def after_attention(b: Bucket, i: int) -> None:
            layer = layers[i]
            a = layer.self_attn.o_proj(b.attn.view(b.n, -1))
            ln = layer.post_attention_layernorm
            h, x = ops.add_rmsnorm(a, b.state["x"], ln.weight, ln.eps)
            mlp = layer.mlp
            mo = mlp.down_proj(ops.silu_mul(mlp.gate_up(h)))
            ln = layers[i + 1].input_layernorm if i + 1 < len(layers) else m.model.norm
            b.state["h"], b.state["x"] = ops.add_rmsnorm(mo, x, ln.weight, ln.eps)

        def first(b: Bucket) -> None:
            x = m.model.embed_tokens(b.inp[0])
            ln = layers[0].input_layernorm
            b.state["h"], b.state["x"] = ops.add_rmsnorm(x, None, ln.weight, ln.eps)
            qkv_rope(b, 0)

        def middle(i: int) -> Callable[[Bucket], None]:
            def piece(b: Bucket) -> None:
                after_attention(b, i - 1)
                qkv_rope(b, i)
            return piece

        def last(b: Bucket) -> None:
            after_attention(b, len(layers) - 1)

        return [first] + [middle(i) for i in range(1, len(layers))] + [last]

    def attention(self, b: Bucket, i: int, meta: AttentionMetadata) -> None:
        r = self.runner
        st = b.state
        paged_attention(st["q"], st["k"], st["v"], r.kv_cache[i, 0], r.kv_cache[i, 1], meta,
                        r.model.model.layers[i].self_attn.scale, write=False, out=b.attn)

    # -------------------------------------------------------------------- running a step
    def bucket(self, num_tokens: int) -> int | None:
        for n in self.sizes:
            if n >= num_tokens:
                return n if n in self.buckets else None
        return None

    @torch.inference_mode()
    def run(self, n: int, ids: list[int], positions: list[int], slots: list[int], meta: AttentionMetadata,
            logit_rows: torch.Tensor) -> torch.Tensor:
        """One step of `len(ids)` tokens padded to bucket `n`; `meta` describes the real rows only (its slot
        mapping and positions are unused: the pieces read them from the bucket's buffer)."""
        b = self.buckets[n]
        t = len(ids)
        if b.copied is not None:
            b.copied.synchronize()
        h = b.host_np
        h[0, :t], h[1, :t], h[2, :t] = ids, positions, slots
        h[0, t:], h[1, t:], h[2, t:] = 0, 0, self.scratch_slot
        b.inp.copy_(b.host, non_blocking=True)
        if b.copied is not None:
            b.copied.record()
        self._forward(b, meta)
        self.steps += 1
        out = b.state["h"][logit_rows]
        return self.runner.model.lm_head(out).float()

    def _forward(self, b: Bucket, meta: AttentionMetadata) -> None:
        fns = None if b.graphs else self.pieces()
        layers = len(self.runner.model.model.layers)
        for i in range(layers + 1):
            if fns is None:
                b.graphs[i].replay()
                b.state = b.outs[i]  # a replay rebinds nothing: read what this graph wrote, not the last capture's
            else:
                fns[i](b)
            if i < layers:
                self.attention(b, i, meta)

    # -------------------------------------------------------------------- capture
    @torch.inference_mode()
    def capture_all(self) -> None:
        r = self.runner
        t0 = time.perf_counter()
        for n in reversed(self.sizes):  # largest first: smaller buckets reuse its pool
            try:
                b = self._capture(n)
                err = self._check(b)
            except Exception as e:  # a driver/Triton problem: this bucket stays eager
                self.rejected[n] = f"{type(e).__name__}: {e}"[:200]
                log.warning("prefill graph for %d tokens not captured: %s", n, self.rejected[n])
                if r.device.type == "cuda":
                    torch.cuda.synchronize(r.device)
                continue
            if not err < 5e-2:  # the same kernels on padded rows: only rounding may differ
                self.rejected[n] = f"relative error {err:.3g}"
                log.warning("prefill graph for %d tokens rejected: relative error %.3g", n, err)
                continue
            self.buckets[n] = b
        if r.device.type == "cuda":
            torch.cuda.synchronize(r.device)
        self.capture_s = time.perf_counter() - t0
        log.info("prefill graphs: %d of %d token-count buckets captured in %.1f s%s", len(self.buckets),
                 len(self.sizes), self.capture_s, f" (rejected: {self.rejected})" if self.rejected else "")

    def _capture(self, n: int) -> Bucket:
        r = self.runner
        b = Bucket(n, r, pin=r.device.type == "cuda")
        b.host_np[2, :] = self.scratch_slot
        b.inp.copy_(b.host)
        for fn in self.pieces():
            inputs = dict(b.state)  # the previous piece's captured outputs: what this piece must read
            for _ in range(2):  # warm-up outside the capture: Triton compiles, cuBLAS picks its kernels
                fn(b)
                b.state = dict(inputs)
            if r.device.type != "cuda":
                b.graphs.append(EmulatedGraph(fn, b))
                b.outs.append(dict(b.state))
                continue
            torch.cuda.synchronize(r.device)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self.pool):
                fn(b)  # the state tensors it leaves are the graph's outputs, rewritten by every replay
            if self.pool is None:
                self.pool = g.pool()
            b.graphs.append(g)
            b.outs.append(dict(b.state))
        return b

    def _check(self, b: Bucket) -> float:
        """Relative error of the graph step against the eager model on the same synthetic prompts (fresh chunks of
        up to 64 tokens, K/V into the scratch block, one row short of the bucket so padding is exercised)."""
        r = self.runner
        t = max(1, b.n - 1)
        c = min(64, t, r.max_model_len - 1)
        gen = torch.Generator().manual_seed(b.n)
        ids = torch.randint(0, r.vocab_size, (t,), generator=gen).tolist()
        positions = [p % c for p in range(t)]
        slots = [self.scratch_slot + p % r.block_size for p in range(t)]
        chunks = [PrefillChunk(j, min(c, t - j), 0, None) for j in range(0, t, c)]
        rows = torch.tensor([ch.token_start + ch.num_tokens - 1 for ch in chunks], device=r.device)
        dev = r.device

        def meta() -> AttentionMetadata:
            return AttentionMetadata(slot_mapping=torch.tensor(slots, device=dev), decode_rows=None,
                                     decode_block_tables=None, decode_context_lens=None, prefills=list(chunks),
                                     block_size=r.block_size, sliding_window=r.spec.sliding_window,
                                     positions=torch.tensor(positions, device=dev))

        m = meta()
        pos = m.positions
        cos, sin = (r.cos, r.sin) if r.model.fused else (r.cos[pos], r.sin[pos])
        ref = r.model(torch.tensor(ids, device=dev), cos, sin, r.kv_cache, m, rows)
        self.buckets[b.n] = b
        try:
            got = self.run(b.n, ids, positions, slots, meta(), rows)
        finally:
            del self.buckets[b.n]
            self.steps = 0
        return ((got - ref).norm() / ref.norm().clamp(min=1e-6)).item()

    def release(self) -> None:
        for b in self.buckets.values():
            for g in b.graphs:
                g.reset()
            b.outs.clear()
        self.buckets.clear()
