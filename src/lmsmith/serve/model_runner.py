"""Loads a model and runs one scheduled batch: builds the flattened inputs and block-table metadata, returns logits.

`NativeRunner` runs our Llama-family implementation on the paged KV cache. `HFRunner` is the slow fallback
for architectures we don't implement: it recomputes each sampling sequence with transformers (no KV cache),
so everything above it (scheduler, sampling, streaming) behaves the same.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import torch

from lmsmith.errors import LmsmithError
from lmsmith.models import load_model
from lmsmith.quant.format import swap_in_quantized
from lmsmith.quant.passes import prepare_for_inference
from lmsmith.serve import paged_decode, pdl, tp_layers
from lmsmith.serve.attention import AttentionMetadata, PrefillChunk
from lmsmith.serve.fused import StepInputs, argmax_rows
from lmsmith.serve.gemv import (
    DENSE_FALLBACK,
    bs1_eligible,
    drop_planar,
    forward_bs1,
    norm_in_ok,
    replay_ms,
    tune_tiles,
    uses_planar,
)
from lmsmith.serve.llama import LlamaForCausalLM, rope_tables, spec_from_config
from lmsmith.serve.prefill_graphs import PrefillGraphs, graphs_wanted
from lmsmith.serve.scheduler import ScheduledSeq
from lmsmith.serve.weights import ModelHandle

CPU_KV_BUDGET_BYTES = 2 * 1024**3
TABLE_COL = 6  # DecodeGraphs' input columns: token, position, slot, context length, source row, ring parity, table...
# the device-side advance is checked for buckets up to this many rows: in larger batches some row crosses into a
# new block (or the batch changes) nearly every step, so the check would only cost host time
ADVANCE_MAX_BS = 8
PAD_SRC = -2  # the source row of a padding row (never advanced; see fused.StepInputs)
# batch-1 GEMV step variants tried against cuBLAS when the graphs are captured (tiles: rows x columns per program)
BS1_PLANS: dict[str, dict] = {}  # filled at capture from the tiles measured fastest per projection
# prompt chunks after cached tokens of up to this many tokens attend as paged-decode rows: each row re-reads its
# sequence's cached keys, so short chunks only (LMSMITH_CHUNK_ROWS=0: never)
CHUNK_ROWS = 32
log = logging.getLogger("lmsmith.serve")

GRAPH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)


class NativeRunner:
    native = True

    def __init__(self, mh: ModelHandle, dtype: torch.dtype, device: torch.device, max_model_len: int,
                 tp: Any = None, load_format: str = "auto"):
        """`tp` (a tp_layers.TPContext): load and run only this rank's shard. `load_format="dummy"`: random
        weights made on the device (benchmarks of shapes without a checkpoint)."""
        self.device = device
        self.dtype = dtype
        self.config = mh.config
        self.spec = spec_from_config(mh.config)
        self.tp = tp
        if tp is not None:
            full_spec, self.spec = self.spec, tp_layers.local_spec(self.spec, tp)
        with torch.device("meta"):
            model = LlamaForCausalLM(self.spec)
            if tp is not None:
                tp_layers.parallelize(model, full_spec, tp)
        self.quant = mh.quant if load_format != "dummy" else None
        if self.quant is not None:
            if tp is not None:
                raise LmsmithError("tensor parallelism does not shard quantized weights yet",
                                   "serve the quantized model on one GPU, or shard the unquantized model")
            swap_in_quantized(model, self.quant, device)
        if load_format == "dummy":
            model = tp_layers.dummy_weights(model, dtype, device, seed=0 if tp is None else tp.rank)
        else:
            sd = mh.state_dict(dtype) if tp is None else tp_layers.shard_state_dict(mh, tp, dtype)
            if "lm_head.qweight" in sd:
                pass  # a quantized lm_head: the embedding stays full precision for the lookups
            elif self.spec.tie_word_embeddings or "lm_head.weight" not in sd:
                sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
            missing, unexpected = model.load_state_dict(sd, strict=False, assign=True)
            missing = [m for m in missing if not m.endswith("rotary_emb.inv_freq")]
            if missing:
                raise LmsmithError(f"checkpoint is missing {len(missing)} weights (e.g. {missing[0]})",
                                   "is this a complete Llama-family checkpoint?")
            del sd
            model = model.to(device)
        model.fuse()  # after the move: fused weights are plain tensors, which .to() would not carry
        if self.quant is not None:
            prepare_for_inference(model, dtype)  # kernel layouts now, never inside a CUDA graph capture
        if tp is not None:
            tp_layers.add_reduce_hooks(model, tp)
        self.model = model.eval()
        self.vocab_size = self.spec.vocab_size
        self.cos, self.sin = rope_tables(mh.config, self.spec, max_model_len + 1, dtype, device)
        self.kv_cache: torch.Tensor | None = None
        self.block_size = 16
        self.max_model_len = max_model_len
        self.graphs: DecodeGraphs | None = None
        self.prefill_graphs: PrefillGraphs | None = None
        self.use_cuda_graphs = device.type == "cuda"
        self.greedy_on_host: torch.Tensor | None = None  # see decode_step
        rows_on = paged_decode.available(device) and os.environ.get("LMSMITH_CHUNK_ROWS", "1") != "0"
        self.chunk_rows = CHUNK_ROWS if rows_on else 0  # see CHUNK_ROWS (CUDA only)
        self.model.fused = device.type == "cuda" and dtype in (torch.bfloat16, torch.float16)

    def kv_bytes_per_block(self, block_size: int) -> int:
        s = self.spec
        return 2 * s.num_layers * block_size * s.num_kv_heads * s.head_dim * torch.finfo(self.dtype).bits // 8

    def allocate_kv(self, num_blocks: int, block_size: int, max_num_seqs: int = 64) -> None:
        """One extra block past `num_blocks` is scratch space that padded CUDA-graph rows write into."""
        s = self.spec
        self.block_size = block_size
        self.kv_cache = torch.zeros(s.num_layers, 2, num_blocks + 1, block_size, s.num_kv_heads, s.head_dim,
                                    dtype=self.dtype, device=self.device)
        if paged_decode.available(self.device):  # every decode-kernel variant compiled now, not mid-serving
            try:
                heads = s.num_heads // s.num_kv_heads * self.kv_cache.shape[-2]  # this rank's query heads
                paged_decode.warm_up(self.kv_cache[0, 0], self.kv_cache[0, 1], heads, s.sliding_window)
            except Exception as e:  # noqa: BLE001 - a missed warm-up only costs a compile later
                log.warning("paged decode warm-up failed (%s: %s); kernels compile when first used",
                            type(e).__name__, e)
        if self.use_cuda_graphs:
            self.graphs = DecodeGraphs(self, max_num_seqs, scratch_block=num_blocks)

    def capture_prefill(self, max_num_batched_tokens: int) -> None:
        """Piecewise CUDA graphs for prefill and mixed steps up to the step's token budget (serve.prefill_graphs)."""
        if self.use_cuda_graphs and self.kv_cache is not None and graphs_wanted(self):
            self.prefill_graphs = PrefillGraphs(self, max_num_batched_tokens, scratch_block=self.kv_cache.shape[2] - 1)

    def release_graphs(self) -> None:
        """Drop the captured decode graphs. Under tensor parallelism they hold NCCL work, and destroying the
        process group while such graphs exist hangs in ncclCommDestroy (pytorch/pytorch#115388)."""
        if self.prefill_graphs is not None:
            self.prefill_graphs.release()
            self.prefill_graphs = None
        if self.graphs is not None:
            for g in self.graphs.graphs.values():
                g.reset()
            self.graphs.graphs.clear()
            self.graphs.logits.clear()
            self.graphs = None
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    supports_overlap = True

    @torch.no_grad()
    def load_weights(self, weights: Any) -> int:
        """Copy new weights (HF names, e.g. from a model being trained) into the loaded model in place.

        In place, so captured CUDA graphs and the bound CPU kernels keep pointing at the right memory; q/k/v and
        gate/up go into their slices of the fused matrices. Returns the number of tensors copied."""
        if self.quant is not None:
            raise LmsmithError("cannot push weights into a quantized model", "roll out from the unquantized model")
        if self.tp is not None:
            raise LmsmithError("pushing weights into a tensor-parallel engine is not supported yet")
        model, s = self.model, self.spec
        rows = {"q": (0, s.num_heads * s.head_dim), "k": (s.num_heads * s.head_dim, s.num_kv_heads * s.head_dim)}
        rows["v"] = (rows["k"][0] + rows["k"][1], s.num_kv_heads * s.head_dim)
        items = weights.items() if hasattr(weights, "items") else weights
        n = 0
        seen: set[str] = set()
        for name, t in items:
            parts = name.split(".")
            if len(parts) == 6 and parts[0] == "model" and parts[1] == "layers":
                layer = model.model.layers[int(parts[2])]
                proj, kind = parts[4], parts[5]
                if proj in ("q_proj", "k_proj", "v_proj"):
                    start, size = rows[proj[0]]
                    dst = layer.self_attn.qkv_w if kind == "weight" else layer.self_attn.qkv_b
                    dst[start:start + size].copy_(t)
                    n += 1
                    continue
                if proj in ("gate_proj", "up_proj"):
                    half = s.intermediate_size
                    start = 0 if proj == "gate_proj" else half
                    dst = layer.mlp.gu_w if kind == "weight" else layer.mlp.gu_b
                    dst[start:start + half].copy_(t)
                    n += 1
                    continue
            try:
                dst = model.get_parameter(name)
            except AttributeError:
                continue  # e.g. rotary inv_freq: not a weight of ours
            dst.copy_(t)
            seen.add(name)
            n += 1
        emb, head = model.model.embed_tokens.weight, model.lm_head.weight
        if "model.embed_tokens.weight" in seen and "lm_head.weight" not in seen and s.tie_word_embeddings \
                and head.data_ptr() != emb.data_ptr():
            head.copy_(emb)  # tied in the checkpoint, two tensors here (e.g. after the move to the GPU)
        return n

    @torch.inference_mode()
    def decode_step(self, batch: list[ScheduledSeq], prev_tokens: torch.Tensor | None,
                    src_rows: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """A decode-only step launched without waiting for the previous one: sequence i's input token is
        `prev_tokens[src_rows[i]]` (still on the device) when `src_rows[i] >= 0`, else its last host token.
        Returns (logits [B, V] float32, greedy tokens [B] long), both left on the device, nothing synchronized.
        `greedy_on_host` is then pinned host memory the step itself writes the greedy tokens to, or None."""
        self.greedy_on_host = None
        if self.graphs is not None and len(batch) <= self.graphs.max_bs:
            out = self.graphs.run(batch, prev_tokens, src_rows)
            self.greedy_on_host = self.graphs.host_tokens(len(batch))
            return out
        logits = self.execute(batch, prev_tokens, src_rows)
        return logits, argmax_rows(logits)

    @torch.inference_mode()
    def execute(self, batch: list[ScheduledSeq], prev_tokens: torch.Tensor | None = None,
                src_rows: list[int] | None = None) -> torch.Tensor:
        if self.graphs is not None and len(batch) <= self.graphs.max_bs and \
                all(s.num_tokens == 1 and s.samples for s in batch):
            return self.graphs.run(batch, prev_tokens, src_rows)[0]
        bs = self.block_size
        ids: list[int] = []
        positions: list[int] = []
        slots: list[int] = []
        logit_rows: list[int] = []
        decode_rows: list[int] = []
        decode_tables: list[list[int]] = []
        decode_lens: list[int] = []
        prefills: list[PrefillChunk] = []
        rows_ok = self.chunk_rows
        for s in batch:
            seq, start, n = s.seq, s.start, s.num_tokens
            row = len(ids)
            ids.extend(seq.tokens[start:start + n])
            positions.extend(range(start, start + n))
            table = seq.block_table
            p, end = start, start + n
            while p < end:  # one range per block, not a generator step per token
                take = min(bs - p % bs, end - p)
                first = table[p // bs] * bs + p % bs
                slots.extend(range(first, first + take))
                p += take
            if n == 1:
                decode_rows.append(row)
                decode_tables.append(table[:(start + bs) // bs])
                decode_lens.append(start + 1)
            elif start and n <= rows_ok:
                # a short chunk after cached tokens (a prefix-cache hit, a prompt's last chunk): each token is a row
                # of the paged decode kernel with its own context length (the step writes all K/V before attention),
                # so every such chunk shares the decode rows' one launch per layer instead of a block gather and an
                # SDPA call per chunk and layer (24 prefix hits of 16 tokens: a 59 ms mixed step on an H100)
                decode_rows.extend(range(row, row + n))
                decode_tables.extend(table[:(q + bs) // bs] for q in range(start, start + n))
                decode_lens.extend(range(start + 1, start + n + 1))
            else:
                nb = -(-(start + n) // bs)
                # a first chunk attends to its own fresh K/V: no block table on the device (one copy less per prompt)
                bt = torch.tensor(table[:nb], dtype=torch.long, device=self.device) if start else None
                prefills.append(PrefillChunk(row, n, start, bt))
            if s.samples:
                logit_rows.append(row + n - 1)
        dev = self.device
        pg = self.prefill_graphs
        bucket = pg.bucket(len(ids)) if pg is not None and not (src_rows and max(src_rows) >= 0) else None
        meta = AttentionMetadata(
            slot_mapping=None if bucket else torch.tensor(slots, dtype=torch.long, device=dev), decode_rows=None,
            decode_block_tables=None, decode_context_lens=None, prefills=prefills, block_size=bs,
            sliding_window=self.spec.sliding_window)
        if decode_rows:
            width = max(len(t) for t in decode_tables)
            meta.decode_rows = torch.tensor(decode_rows, dtype=torch.long, device=dev)
            meta.decode_block_tables = torch.tensor([t + [0] * (width - len(t)) for t in decode_tables],
                                                    dtype=torch.long, device=dev)
            meta.decode_context_lens = torch.tensor(decode_lens, dtype=torch.long, device=dev)
            if dev.type == "cpu" and not prefills and len(decode_rows) == len(logit_rows) == len(batch) and not bucket:
                meta.host_tables, meta.host_lens = decode_tables, decode_lens  # the lean CPU decode step
        if bucket:  # token ids, positions and slots go in the bucket's buffer with one copy
            return pg.run(bucket, ids, positions, slots, meta, torch.tensor(logit_rows, dtype=torch.long, device=dev))
        pos = torch.tensor(positions, dtype=torch.long, device=dev)
        meta.positions = pos
        cos, sin = (self.cos, self.sin) if self.model.fused else (self.cos[pos], self.sin[pos])
        input_ids = torch.tensor(ids, dtype=torch.long, device=dev)
        if prev_tokens is not None and src_rows and max(src_rows) >= 0:  # decode-only: row i is sequence i
            src = torch.tensor(src_rows, dtype=torch.long, device=dev)
            input_ids = torch.where(src >= 0, prev_tokens[src.clamp(min=0)], input_ids)
        return self.model(input_ids, cos, sin, self.kv_cache, meta,
                          torch.tensor(logit_rows, dtype=torch.long, device=dev))


class DecodeGraphs:
    """CUDA graphs of a whole decode step, one per batch-size bucket; a batch is padded up to its bucket.

    All inputs live in one device buffer `[max_bs, TABLE_COL + max_blocks]` (token, position, slot, context
    length, source row, ring parity, block table) filled from one pinned host buffer with a single copy, so a
    step is: fill, copy, replay. A row whose source row is >= 0 takes its token from `tokens[source row]`: the
    greedy tokens the previous replay wrote there (argmax runs inside the graph), so a step can be launched before
    the host has seen the previous step's tokens. Padded rows write their K/V into a scratch block and attend to
    it alone.

    The step's last kernel also sets up the next step (fused.StepInputs): each live row moves one position on,
    and the greedy tokens land in pinned host memory. While a batch only moves forward (same rows, same block
    tables: 15 of 16 decode steps) a step is just the replay: no copy to the device, none back
    (LMSMITH_DECODE_ADVANCE=0: copy every step, as before).
    """

    def __init__(self, runner: NativeRunner, max_num_seqs: int, scratch_block: int):
        self.runner = runner
        self.buckets = [b for b in GRAPH_BUCKETS if b < max_num_seqs] + [max_num_seqs]
        self.max_bs = max_num_seqs
        self.scratch = scratch_block
        bs = runner.block_size
        self.max_blocks = -(-(runner.max_model_len + 1) // bs)
        width = TABLE_COL + self.max_blocks
        # two pinned staging buffers, alternated: with overlapped steps the host fills step n+1's inputs while
        # step n's copy may still be queued behind the running graph
        self.cuda = runner.device.type == "cuda"  # else a CPU emulation of the graphs (tests/serve/decode_graphs_check.py)
        self.hosts = [torch.zeros(self.max_bs, width, dtype=torch.long, pin_memory=self.cuda) for _ in range(2)]
        self.hosts_np = [h.numpy() for h in self.hosts]
        self.flip = 0
        self.host, self.host_np = self.hosts[0], self.hosts_np[0]
        self.buf = torch.zeros(self.max_bs, width, dtype=torch.long, device=runner.device)
        self.tokens = torch.zeros(self.max_bs, dtype=torch.long, device=runner.device)  # sampled, fed forward
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.pool = None
        self.counter = torch.zeros(1, dtype=torch.int32, device=runner.device)  # GEMV epilogue ticket
        self.step = self._step_inputs()
        self.replays = 0  # while the advance is on: the ring parity of the next replay is replays % 2
        self.last: tuple | None = None  # (bucket, [(position, block table)] of each row) of the last replay
        self.copies_skipped = 0
        self.rows = torch.arange(self.max_bs, device=runner.device)
        self.bs1_plans = dict(BS1_PLANS)
        self.bs1_choice = "cublas"
        self.bs1_timings: dict[str, object] = {}
        self.bs1_errors: dict[str, float] = {}  # each candidate step's logits vs the model's own (relative)
        self.tile_timings: dict[str, object] = {}
        self._pad(0)
        self.buf.copy_(self.host)
        self.capture_all()
        if self.step is not None:
            self.step.on.fill_(1)

    def _step_inputs(self) -> StepInputs | None:
        """The device-side advance, if wanted and if this Triton can write pinned host memory from a kernel."""
        if os.environ.get("LMSMITH_DECODE_ADVANCE", "1") == "0":
            return None
        ring = torch.zeros(2, self.max_bs, dtype=torch.long, pin_memory=self.cuda)
        step = StepInputs(self.buf, ring, torch.ones(1, dtype=torch.int32, device=self.buf.device),
                          self.runner.block_size, TABLE_COL)
        try:  # one probe row: token 7 must reach the ring, position 3 become 4
            probe = torch.zeros(1, TABLE_COL + 1, dtype=torch.long, device=self.buf.device)
            probe[0, 1] = 3
            logits = torch.zeros(1, 16, device=self.buf.device)
            logits[0, 7] = 1
            argmax_rows(logits, out=self.tokens[:1], step=step._replace(buf=probe))
            if self.cuda:
                torch.cuda.synchronize(self.buf.device)
            ok = ring[0, 0].item() == 7 and probe[0, 1].item() == 4
        except Exception as e:  # noqa: BLE001 - a Triton/driver that refuses host pointers: copy as before
            log.info("decode step advance off (%s: %s)", type(e).__name__, str(e).splitlines()[0] if str(e) else "")
            ok = False
        step.on.zero_()  # off while capturing and tuning: their replays must not move the inputs
        return step if ok else None

    def _pad(self, start: int) -> None:
        h = self.host_np
        h[start:, 0] = 0
        h[start:, 1] = 0
        h[start:, 2] = self.scratch * self.runner.block_size
        h[start:, 3] = 1
        h[start:, 4] = PAD_SRC
        h[start:, TABLE_COL] = self.scratch

    def _forward(self, n: int, plan: dict | None = None) -> torch.Tensor:
        """plan None: the model's own (cuBLAS) step; else the batch-1 GEMV step with these tiles."""
        r = self.runner
        buf = self.buf[:n]
        pos = buf[:, 1]
        meta = AttentionMetadata(slot_mapping=buf[:, 2], decode_rows=self.rows[:n],
                                 decode_block_tables=buf[:, TABLE_COL:], decode_context_lens=buf[:, 3], prefills=[],
                                 block_size=r.block_size, sliding_window=r.spec.sliding_window, decode_only=True,
                                 positions=pos)
        cos, sin = (r.cos, r.sin) if r.model.fused else (r.cos[pos], r.sin[pos])
        if plan is None:
            src = buf[:, 4]
            ids = torch.where(src >= 0, self.tokens[src.clamp(min=0)], buf[:, 0])
            logits = r.model(ids, cos, sin, r.kv_cache, meta, None)
        else:
            logits = forward_bs1(r.model, buf, self.tokens, cos, sin, r.kv_cache, meta, self.counter, plan)
        argmax_rows(logits, out=self.tokens[:n], step=self.step and self.step._replace(buf=buf))
        return logits

    def _capture(self, n: int, plan: dict | None = None) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        with pdl.active(pdl.forced() or bool(plan and plan.get("pdl"))):
            for _ in range(2):  # warm-up (Triton compiles, cuBLAS picks kernels) outside the capture
                self._forward(n, plan)
            torch.cuda.synchronize(self.runner.device)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g, pool=self.pool):
                logits = self._forward(n, plan)
        if self.pool is None:
            self.pool = g.pool()
        return g, logits

    def _replay_ms(self, g: torch.cuda.CUDAGraph, reps: int = 30) -> float:
        return replay_ms(g, reps, warmup=3)

    @torch.inference_mode()
    def capture_all(self) -> None:
        for n in reversed(self.buckets):  # largest first: the smaller graphs reuse its memory pool
            self.graphs[n], self.logits[n] = self._capture(n)
        # quantized models too (int4/int8 weights read as stored): bs1_eligible turns away what the GEMV cannot read
        if 1 in self.graphs and bs1_eligible(self.runner.model) and os.environ.get("LMSMITH_DECODE_GEMV", "1") != "0":
            self._pick_bs1()
        if self.cuda:
            torch.cuda.synchronize(self.runner.device)

    def _pick_bs1(self) -> None:
        """Capture the batch-1 step with the GEMV kernels too (tile shapes tuned per projection, a few mixes
        with cuBLAS, then attention split counts) and keep the graph that replays fastest. Timed on one padded
        row attending to a 256-token context (the scratch block, repeated), compared on the same logits."""
        r = self.runner
        ctx = min(256, self.max_blocks * r.block_size - 1)
        h = self.host_np
        h[0, 1] = ctx - 1  # the new token is the context's last (the one-launch attention relies on it)
        h[0, 2] = self.scratch * r.block_size + (ctx - 1) % r.block_size
        h[0, 3] = ctx
        h[0, TABLE_COL:TABLE_COL + -(-ctx // r.block_size)] = self.scratch
        self.buf.copy_(self.host)
        best = self._replay_ms(self.graphs[1])
        ref = self.logits[1].clone()
        self.bs1_timings = {"cublas": round(best, 4)}

        def attempt(name: str, plan: dict) -> None:
            nonlocal best
            try:
                g, logits = self._capture(1, plan)
            except Exception as e:  # a Triton/driver problem: keep what we have
                self.bs1_timings[name] = f"failed: {type(e).__name__}"
                return
            ms = self._replay_ms(g)
            err = ((logits - ref).norm() / ref.norm()).item()
            self.bs1_errors[name] = round(err, 6)
            if not err < 5e-2:  # same inputs, other kernels: only bf16 rounding may differ (a broken kernel: ~1)
                self.bs1_timings[name] = f"rejected: relative error {err:.3g}"
                return
            self.bs1_timings[name] = round(ms, 4)
            self.bs1_plans[name] = plan
            if ms < best:
                best, self.graphs[1], self.logits[1], self.bs1_choice = ms, g, logits, name

        try:
            tiles, self.tile_timings = tune_tiles(r.model, self.counter)
        except Exception as e:  # keep the cuBLAS step
            self.tile_timings = {"failed": f"{type(e).__name__}: {e}"[:200]}
            tiles = None
        if tiles is not None:
            # the per-projection winners do not simply add up inside the whole graph: try a few mixes
            head = {"qkv": None, "gate_up": None, "o_proj": None, "down": None, "lm_head": tiles["lm_head"]}
            ho = {**head, "o_proj": tiles["o_proj"]}
            for name, plan in {"gemv-tuned": tiles, "head": head, "head+o_proj": ho,
                               "head+down": {**head, "down": tiles["down"]},
                               "head+o_proj+down": {**ho, "down": tiles["down"]},
                               "head+o_proj+gate_up": {**ho, "gate_up": tiles["gate_up"]}}.items():
                if plan not in self.bs1_plans.values():  # a projection whose own kernel won repeats a mix
                    attempt(name, plan)
            base = self.bs1_plans.get(self.bs1_choice, head)
            for k in (4, 8):  # coarser context splits: fewer programs, a smaller merge
                attempt(f"{self.bs1_choice}+splits{k}", {**base, "attn_splits": k})
            if paged_decode.available(r.device):  # RoPE + K/V write + attention + merge in one launch (decode_attention)
                base = self.bs1_plans.get(self.bs1_choice, head)
                for k in (None, 4, 8):
                    attempt(f"{self.bs1_choice}+attn1" + (f"x{k}" if k else ""),
                            {**base, "qkv": None, "attn": "fused", "attn_splits": k})
            use_pdl = pdl.supported(r.device)  # each Triton launch overlapping its predecessor's tail (serve.pdl)
            plans = {f"{self.bs1_choice}+pdl": self.bs1_plans.get(self.bs1_choice, head), "gemv-tuned+pdl": tiles,
                     "gemv-tuned+attn1+pdl": {**tiles, "qkv": None, "attn": "fused"}} if use_pdl else {}
            tile_sets = {"gemv": tiles}
            if use_pdl:
                try:  # tiles tuned with overlapping launches
                    ptiles, ptimes = tune_tiles(r.model, self.counter, with_pdl=True)
                    self.tile_timings.update(ptimes)
                    plans |= {"pdl-tuned": ptiles, "pdl-tuned+attn1": {**ptiles, "qkv": None, "attn": "fused"}}
                    tile_sets["pdl-tuned"] = ptiles
                except Exception as e:  # keep the plans above
                    self.tile_timings["pdl"] = f"failed: {type(e).__name__}: {e}"[:200]
            # the residual stream carried through the GEMVs (no add+RMSNorm tickets): every projection on a tile
            for name, ts in tile_sets.items():
                full = {**ts, **{k: v for k, v in DENSE_FALLBACK.items() if ts.get(k) is None}}
                if norm_in_ok(r.model, full):
                    plans[f"{name}-norm-in"] = {**full, "norm_in": True}
            for name, plan in plans.items():
                plan = {**plan, "pdl": use_pdl}
                if plan not in self.bs1_plans.values():
                    attempt(name, plan)
        if not uses_planar(self.bs1_plans.get(self.bs1_choice)):
            drop_planar(r.model)  # the tiles that lost keep no copy of the weights
        self._pad(0)
        self.buf.copy_(self.host)

    def run(self, batch: list[ScheduledSeq], prev_tokens: torch.Tensor | None = None,
            src_rows: list[int] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns views of the graph's outputs (logits, greedy tokens): valid until the next replay."""
        n = len(batch)
        padded = next(b for b in self.buckets if b >= n)
        bs = self.runner.block_size
        if src_rows is None:
            src_rows = [-1] * n
        elif prev_tokens is not None and prev_tokens.data_ptr() != self.tokens.data_ptr():
            self.tokens[:prev_tokens.shape[0]].copy_(prev_tokens)  # sampled (not greedy) tokens
        rows = [(s.start, s.seq.block_table) for s in batch]
        track = self.step is not None and padded <= ADVANCE_MAX_BS
        if track and self._advanced_to(padded, rows, src_rows):
            self.copies_skipped += 1  # the last replay already set these inputs up on the device
        else:
            self.flip ^= 1
            self.host, self.host_np = self.hosts[self.flip], self.hosts_np[self.flip]
            h = self.host_np
            for i, (p, table) in enumerate(rows):
                row = h[i]
                src = src_rows[i]
                row[0] = batch[i].seq.tokens[p] if src < 0 else 0
                row[1] = p
                row[2] = table[p // bs] * bs + p % bs
                row[3] = p + 1
                row[4] = src
                row[TABLE_COL:TABLE_COL + len(table)] = table
            self._pad(n)
            h[:padded, 5] = self.replays & 1
            self.buf[:padded].copy_(self.host[:padded], non_blocking=True)
        self.graphs[padded].replay()
        if self.step is not None:
            self.last = (padded, [(p, list(table)) for p, table in rows]) if track else None
            self.replays += 1
        return self.logits[padded][:n], self.tokens[:n]

    def _advanced_to(self, padded: int, rows: list[tuple[int, list[int]]], src_rows: list[int]) -> bool:
        """Does the device hold these inputs already: same bucket and rows, each one position on, its input token
        the last replay's output in its own row, its block table unchanged?"""
        last = self.last
        if last is None or last[0] != padded or len(last[1]) != len(rows):
            return False
        return all(src == i and p == lp + 1 and table == lt
                   for i, (src, (p, table), (lp, lt)) in enumerate(zip(src_rows, rows, last[1])))

    def host_tokens(self, n: int) -> torch.Tensor | None:
        """Pinned host memory that holds the last replay's greedy tokens once it has run (None: advance off)."""
        if self.step is None:
            return None
        return self.step.ring[(self.replays - 1) & 1, :n]


class HFRunner:
    """transformers-backed fallback: correct for any causal LM, but recomputes the whole sequence per token."""

    native = False
    supports_overlap = False  # it reads every sequence's tokens on the host

    def __init__(self, mh: ModelHandle, dtype: torch.dtype, device: torch.device, reason: str):
        self.reason = reason
        self.device = device
        self.dtype = dtype
        self.config = mh.config
        self.model = load_model(mh.model, dtype=dtype, device=str(device), merge_adapter=True)
        self.vocab_size = self.model.get_output_embeddings().weight.shape[0]
        self.block_size = 16

    def kv_bytes_per_block(self, block_size: int) -> int:
        return block_size  # no real cache: blocks only pace admission

    def allocate_kv(self, num_blocks: int, block_size: int, max_num_seqs: int = 64) -> None:
        self.block_size = block_size

    @torch.no_grad()
    def load_weights(self, weights: Any) -> int:
        """Copy new weights (HF names) into the transformers model in place."""
        sd = self.model.state_dict()
        n = 0
        for name, t in (weights.items() if hasattr(weights, "items") else weights):
            if name in sd:
                sd[name].copy_(t)
                n += 1
        return n

    @torch.inference_mode()
    def execute(self, batch: list[ScheduledSeq]) -> torch.Tensor:
        rows = []
        for s in batch:
            if s.samples:
                ids = torch.tensor([s.seq.tokens], dtype=torch.long, device=self.device)
                rows.append(self.model(input_ids=ids, logits_to_keep=1).logits[0, -1].float())
        if not rows:
            return torch.empty(0, self.vocab_size, device=self.device)
        return torch.stack(rows)


def auto_num_blocks(runner: Any, block_size: int, max_num_seqs: int, max_model_len: int) -> int:
    """Enough blocks for every sequence at full length, capped by a memory budget (CPU: 2 GiB; GPU: 85% free)."""
    per_block = runner.kv_bytes_per_block(block_size)
    want = max_num_seqs * -(-max_model_len // block_size)
    dev = getattr(runner, "device", torch.device("cpu"))
    if dev.type == "cuda":
        free, _ = torch.cuda.mem_get_info(dev)
        budget = int(free * 0.85) - 512 * 1024**2
    else:
        budget = CPU_KV_BUDGET_BYTES
    return max(2, min(want, budget // per_block))
