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

What crosses from one piece to the next (the residual stream, layer i's q/k/v, the attention output, the last
hidden state) lives in one set of static buffers shared by every bucket (`Stream`, sized for the largest): the
pieces write into them, so a graph leaves nothing alive in the capture pool, whose memory every capture reuses.
Keeping each piece's outputs instead cost ~1.5 GB for the 1B shape's buckets (~6 GB for the 8B shape's).

A step that is one fresh prompt (or a long prompt's first chunk: it attends only to itself) needs no eager
attention at all: with the real rows first, causal attention over the whole padded bucket gives the real rows
exactly what attention over them alone does, so each bucket also has a whole-step graph (`Bucket.whole`: every
piece plus flash attention per layer), and such a step is one copy and one replay (the batch-1 TTFT of a
128-token prompt was dominated by the host launching 16 eager attention calls). LMSMITH_PREFILL_WHOLE=0: off.

Token counts are bucketed (`PREFILL_BUCKETS`, up to the step's token budget); padded rows read token 0 at
position 0 and write their K/V into the scratch block. Each bucket is checked against the eager step when it is
captured (same inputs, logits within bf16 rounding) and dropped if it differs or fails. `capture=False` runs the
same pieces eagerly on padded buffers; on a CPU, `capture=True` stands an `EmulatedGraph` in for each graph
(replay = rerun the piece on the static buffers): how the CPU tests exercise bucketing, padding, the piece split,
the capture order and the check.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from lmsmith.serve import fused as F2
from lmsmith.serve.attention import AttentionMetadata, PrefillChunk, paged_attention

log = logging.getLogger("lmsmith.serve")

PREFILL_BUCKETS = (16, 32, 64, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096)
MAX_GRAPH_TOKENS = 4096  # larger steps (rare: a budget above this) run eagerly; the GPU work dominates there


# ------------------------------------------------------------------------- the element-wise stages, eager
class ReferenceOps:
    """`fused`'s three stages in plain torch (the same math), for devices without Triton: the CPU tests."""

    @staticmethod
    def add_rmsnorm(x, residual, weight, eps, out=None, res_out=None):
        if residual is not None:
            x = x + residual
        h = weight * F.rms_norm(x.float(), (x.shape[-1],), None, eps).to(x.dtype)
        if res_out is not None:
            x = res_out.copy_(x)
        return (h if out is None else out.copy_(h)), x

    @staticmethod
    def rope_and_cache(qkv, cos, sin, positions, slots, k_cache, v_cache, heads, kv_heads, head_dim,
                       q_out=None, k_out=None):
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
        return (q if q_out is None else q_out.copy_(q)), (k if k_out is None else k_out.copy_(k)), v

    @staticmethod
    def silu_mul(gu):
        g, u = gu.chunk(2, dim=-1)
        return (F.silu(g.float()) * u.float()).to(gu.dtype)


def graphs_wanted(runner: Any) -> bool:
    """Prefill graphs for the native single-GPU runner on the fused bf16/fp16 path, quantized weights included (a
    bucket's row count is fixed, so a quantized linear's choice of kernel by row count is too; the decode graphs
    capture the same kernels, and each bucket is still checked against the eager step). On by default there;
    LMSMITH_PREFILL_GRAPHS=0 runs those steps eagerly (H100, 1B shape, 32 streams: TTFT p50 24 vs 50 ms,
    bench/results/serve_load_notes.md)."""
    return (runner.device.type == "cuda" and runner.model.fused and runner.tp is None
            and os.environ.get("LMSMITH_PREFILL_GRAPHS", "1") != "0")


class Stream:
    """The tensors that cross between pieces, for the largest bucket; a bucket uses their first n rows."""

    def __init__(self, n: int, runner: Any):
        s, dev, dt = runner.spec, runner.device, runner.dtype
        self.x = torch.zeros(n, s.hidden_size, dtype=dt, device=dev)  # the residual stream
        self.h = torch.zeros(n, s.hidden_size, dtype=dt, device=dev)  # the last piece's normed hidden state
        self.q = torch.zeros(n, s.num_heads, s.head_dim, dtype=dt, device=dev)
        self.k = torch.zeros(n, s.num_kv_heads, s.head_dim, dtype=dt, device=dev)
        self.v = torch.zeros(n, s.num_kv_heads, s.head_dim, dtype=dt, device=dev)
        self.attn = torch.zeros(n, s.num_heads, s.head_dim, dtype=dt, device=dev)

    def nbytes(self) -> int:
        return sum(t.nbytes for t in (self.x, self.h, self.q, self.k, self.v, self.attn))


class EmulatedGraph:
    """What a captured piece does on replay, on a device without CUDA graphs (the CPU tests of the capture path):
    rerun it on the static buffers. A real replay rebinds no Python name, so a piece that assigned an attribute
    (rather than writing into a buffer) would work here and fail on a GPU: that is refused."""

    def __init__(self, fn: Callable, b: "Bucket"):
        self.fn, self.b = fn, b
        self.replay()

    def replay(self) -> None:
        before = dict(vars(self.b))
        self.fn(self.b)
        moved = [k for k, v in vars(self.b).items() if before.get(k) is not v]
        if moved:
            raise RuntimeError(f"a prefill piece rebound {moved}: pieces must write into the static buffers")

    def reset(self) -> None:
        pass


class Bucket:
    """The input buffers, the views of the shared `Stream` and (when captured) the graphs of one padded token count."""

    def __init__(self, n: int, runner: Any, stream: Stream, pin: bool):
        self.n = n
        self.host = torch.zeros(3, n, dtype=torch.long, pin_memory=pin)  # token, position, slot
        self.host_np = self.host.numpy()
        self.inp = torch.zeros(3, n, dtype=torch.long, device=runner.device)
        self.x, self.h, self.q, self.k, self.v, self.attn = (
            t[:n] for t in (stream.x, stream.h, stream.q, stream.k, stream.v, stream.attn))
        self.graphs: list[torch.cuda.CUDAGraph] = []
        self.whole: Any = None  # the whole-step graph for one fresh prompt (see the module docstring)
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
        self.stream = Stream(top, runner)
        self.buckets: dict[int, Bucket] = {}
        self.pool = None
        self.rejected: dict[int, str] = {}
        self.whole_rejected: dict[int, str] = {}  # buckets that keep only their pieces
        self.steps = 0  # steps run through this path (for the metrics)
        self.whole_steps = 0  # of which one fresh prompt, replayed as one graph
        self.want_whole = os.environ.get("LMSMITH_PREFILL_WHOLE", "1") != "0"
        self.memory_bytes = self.stream.nbytes()  # + the capture pool's, once captured
        if capture:
            self.capture_all()
        else:
            for n in self.sizes:
                self.buckets[n] = Bucket(n, runner, self.stream, pin=False)

    # -------------------------------------------------------------------- the pieces
    def pieces(self) -> list[Callable[[Bucket], None]]:
        """L + 1 functions of a bucket's state: piece i ends with layer i's q/k/v ready for attention."""
        r = self.runner
        m, s, ops = r.model, r.spec, self.ops
        layers = m.model.layers

        def qkv_rope(b: Bucket, i: int, h: torch.Tensor) -> None:
            kv = r.kv_cache
            _, _, v = ops.rope_and_cache(layers[i].self_attn.qkv(h), r.cos, r.sin, b.inp[1], b.inp[2], kv[i, 0],
                                         kv[i, 1], s.num_heads, s.num_kv_heads, s.head_dim, q_out=b.q, k_out=b.k)
            b.v.copy_(v)  # a view of the qkv projection, which lives in the capture pool

        def after_attention(b: Bucket, i: int, out: torch.Tensor | None = None) -> torch.Tensor:
            layer = layers[i]
            a = layer.self_attn.o_proj(b.attn.view(b.n, -1))
            ln = layer.post_attention_layernorm
            h, _ = ops.add_rmsnorm(a, b.x, ln.weight, ln.eps, res_out=b.x)
            mlp = layer.mlp
            mo = mlp.down_proj(ops.silu_mul(mlp.gate_up(h)))
            ln = layers[i + 1].input_layernorm if i + 1 < len(layers) else m.model.norm
            return ops.add_rmsnorm(mo, b.x, ln.weight, ln.eps, out=out, res_out=b.x)[0]

        def first(b: Bucket) -> None:
            ln = layers[0].input_layernorm
            h, _ = ops.add_rmsnorm(m.model.embed_tokens(b.inp[0]), None, ln.weight, ln.eps, res_out=b.x)
            qkv_rope(b, 0, h)

        def middle(i: int) -> Callable[[Bucket], None]:
            def piece(b: Bucket) -> None:
                qkv_rope(b, i, after_attention(b, i - 1))
            return piece

        def last(b: Bucket) -> None:
            after_attention(b, len(layers) - 1, out=b.h)

        return [first] + [middle(i) for i in range(1, len(layers))] + [last]

    def attention(self, b: Bucket, i: int, meta: AttentionMetadata) -> None:
        r = self.runner
        paged_attention(b.q, b.k, b.v, r.kv_cache[i, 0], r.kv_cache[i, 1], meta,
                        r.model.model.layers[i].self_attn.scale, write=False, out=b.attn)

    def whole_step(self) -> Callable[[Bucket], None]:
        """Every piece, with causal attention over the bucket's rows between them: one fresh prompt's step."""
        r = self.runner
        fns = self.pieces()
        layers = r.model.model.layers
        gqa = r.spec.num_heads != r.spec.num_kv_heads

        def step(b: Bucket) -> None:
            for i, layer in enumerate(layers):
                fns[i](b)
                q, k, v = (t.transpose(0, 1).unsqueeze(0) for t in (b.q, b.k, b.v))  # [1, heads, n, d]
                with sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.MATH]):  # as the eager path's fresh chunks
                    o = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=layer.self_attn.scale,
                                                       enable_gqa=gqa)
                b.attn.copy_(o.squeeze(0).transpose(0, 1))
            fns[-1](b)
        return step

    def is_whole(self, t: int, meta: AttentionMetadata) -> bool:
        """Is this step of `t` tokens one prompt that attends only to itself?"""
        if meta.decode_rows is not None or len(meta.prefills) != 1:
            return False
        c, w = meta.prefills[0], self.runner.spec.sliding_window
        return c.pos_start == 0 and c.token_start == 0 and c.num_tokens == t and (w is None or t <= w)

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
        if b.whole is not None and self.is_whole(t, meta):
            b.whole.replay()
            self.whole_steps += 1
        else:
            self._forward(b, meta)
        self.steps += 1
        return self.runner.model.lm_head(b.h[logit_rows]).float()

    def _forward(self, b: Bucket, meta: AttentionMetadata) -> None:
        fns = None if b.graphs else self.pieces()
        layers = len(self.runner.model.model.layers)
        for i in range(layers + 1):
            if fns is None:
                b.graphs[i].replay()
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
            if self.want_whole:
                self._capture_whole(b)
        if r.device.type == "cuda":
            torch.cuda.synchronize(r.device)
            if self.pool is not None:
                self.memory_bytes += pool_bytes(r.device, self.pool)
        self.capture_s = time.perf_counter() - t0
        log.info("prefill graphs: %d of %d token-count buckets captured (%d with a whole-step graph) in %.1f s, "
                 "%.0f MiB%s", len(self.buckets), len(self.sizes), sum(b.whole is not None for b in self.buckets.values()),
                 self.capture_s, self.memory_bytes / 2**20,
                 f" (rejected: {self.rejected} {self.whole_rejected})" if self.rejected or self.whole_rejected else "")

    def _capture(self, n: int) -> Bucket:
        r = self.runner
        b = Bucket(n, r, self.stream, pin=r.device.type == "cuda")
        b.host_np[2, :] = self.scratch_slot
        b.inp.copy_(b.host)
        b.graphs = [self._capture_fn(fn, b) for fn in self.pieces()]
        return b

    def _capture_whole(self, b: Bucket) -> None:
        """The bucket's whole-step graph, kept if it passes the same check; otherwise the bucket keeps its pieces."""
        try:
            b.whole = self._capture_fn(self.whole_step(), b)
            err = self._check(b, whole=True)
            why = None if err < 5e-2 else f"relative error {err:.3g}"
        except Exception as e:  # noqa: BLE001 - a driver/kernel problem: the pieces stay
            why = f"{type(e).__name__}: {e}"[:200]
            if self.runner.device.type == "cuda":
                torch.cuda.synchronize(self.runner.device)
        if why is not None:
            self.whole_rejected[b.n] = why
            log.warning("whole-step prefill graph for %d tokens not kept: %s", b.n, why)
            if b.whole is not None:
                b.whole.reset()
            b.whole = None

    def _capture_fn(self, fn: Callable[[Bucket], None], b: Bucket) -> Any:
        r = self.runner
        for _ in range(2):  # warm-up outside the capture: Triton compiles, cuBLAS picks its kernels
            fn(b)
        if r.device.type != "cuda":
            return EmulatedGraph(fn, b)
        torch.cuda.synchronize(r.device)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g, pool=self.pool):
            fn(b)  # writes only into the static buffers: its temporaries go back to the pool
        if self.pool is None:
            self.pool = g.pool()
        return g

    def _check(self, b: Bucket, whole: bool = False) -> float:
        """Relative error of the graph step against the eager model on the same synthetic prompts (fresh chunks of
        up to 64 tokens, K/V into the scratch block, one row short of the bucket so padding is exercised; `whole`:
        one fresh prompt of that length, through the whole-step graph)."""
        r = self.runner
        t = max(1, b.n - 1)
        if whole:
            t = min(t, r.max_model_len - 1)
        c = t if whole else min(64, t, r.max_model_len - 1)
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
        keep = self.buckets.get(b.n)
        self.buckets[b.n] = b
        whole_graph = b.whole
        if not whole:  # the pieces' own check, even where the whole-step graph would take these prompts
            b.whole = None
        try:
            got = self.run(b.n, ids, positions, slots, meta(), rows)
            if whole and not self.whole_steps:
                raise RuntimeError("the check did not take the whole-step graph")
        finally:
            b.whole = whole_graph
            if keep is None:
                del self.buckets[b.n]
            self.steps = self.whole_steps = 0
        return ((got - ref).norm() / ref.norm().clamp(min=1e-6)).item()

    def release(self) -> None:
        for b in self.buckets.values():
            for g in b.graphs + ([b.whole] if b.whole is not None else []):
                g.reset()
        self.buckets.clear()


def pool_bytes(device: torch.device, pool: Any) -> int:
    """Bytes the caching allocator holds in one graph memory pool (0 where this torch cannot tell)."""
    try:
        segs = torch.cuda.memory_snapshot()
    except Exception:  # noqa: BLE001 - only for the log line
        return 0
    index = device.index if device.index is not None else torch.cuda.current_device()
    return sum(s["total_size"] for s in segs
               if tuple(s.get("segment_pool_id", ())) == tuple(pool) and s.get("device") == index)
