"""The inference engine: requests in, streamed tokens out, one scheduler iteration per `step()`.

    engine = Engine("smollm2-135m-instruct")
    engine.add_request("r1", "Hello", SamplingParams(max_tokens=32))
    while engine.has_unfinished():
        for out in engine.step():
            print(out.text_delta, end="")

Each request becomes `n` sequences. A step schedules prefill chunks and decodes together (continuous
batching), runs the model once over the paged KV cache, samples, detokenizes incrementally, applies stop
conditions and frees finished sequences' blocks.

Overlapped decoding (`async_scheduling`, on by default on CUDA; it also runs on CPU when asked): when a step only decodes, it is launched and left
running on the device, its sampled tokens stay there (a placeholder stands in for each on the host), and the
next `step()` launches the following decode from those device tokens *before* reading the previous ones back
and processing them (detokenize, stop checks, outputs). The host work thus hides behind the GPU's, and
outputs arrive one step behind. A sequence that stops on EOS or a stop string has had one extra token computed,
which is dropped; max_tokens and the context limit are known ahead, so they cost nothing. Prefill steps,
grammar-constrained requests, logprobs and penalties run synchronously.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from lmsmith.errors import LmsmithError
from lmsmith.models import ResolvedModel, load_tokenizer, resolve_model
from lmsmith.serve.block_manager import BlockManager
from lmsmith.serve.loader import load_runner
from lmsmith.serve.model_runner import auto_num_blocks
from lmsmith.serve.sampler import make_generator, overlappable, sample, sample_on_device
from lmsmith.serve.sampling_params import SamplingParams
from lmsmith.serve.scheduler import ScheduledSeq, Scheduler
from lmsmith.serve.sequence import RequestMetrics, Sequence, Status


@dataclass
class RequestOutput:
    """What one sequence produced in one step (deltas) plus everything so far."""

    request_id: str
    index: int
    new_token_ids: list[int]
    text_delta: str
    token_ids: list[int]
    text: str
    finished: bool
    finish_reason: str | None
    stop_reason: str | int | None
    logprobs: list[dict[str, Any]] | None  # for the new tokens: {"token_id", "logprob", "top_logprobs": [(id, lp)]}
    prompt_token_ids: list[int]
    num_cached_tokens: int
    metrics: RequestMetrics = field(repr=False, default=None)  # type: ignore[assignment]


PENDING = -1  # stands in for a sampled token that is still on the device


@dataclass
class InFlight:
    """A launched decode step whose tokens the host has not read yet."""

    seqs: list[Sequence]
    tokens: torch.Tensor  # [B] on the device; the next launch reads it
    host: torch.Tensor  # [B] where the tokens arrive (pinned on CUDA)
    event: Any  # CUDA event recorded after the copy (None on CPU)
    rows: dict[int, int]  # id(seq) -> row in `tokens`
    index: list[int]  # where each sequence's placeholder sits in its token list


def step_composition(batch: list[ScheduledSeq]) -> tuple:
    """(prefill tokens, prefill sequences, decode rows, 0) of a synchronous step, for the step log."""
    dec = sum(1 for s in batch if s.num_tokens == 1 and s.start >= len(s.seq.prompt_ids))
    pf = [s.num_tokens for s in batch if not (s.num_tokens == 1 and s.start >= len(s.seq.prompt_ids))]
    return (sum(pf), len(pf), dec, 0)


def eos_ids_for(model_dir, tokenizer, config) -> list[int]:
    """EOS from generation_config.json (int or list), then the config and the tokenizer."""
    ids: list[int] = []
    gen = model_dir / "generation_config.json"
    sources = []
    if gen.exists():
        sources.append(json.loads(gen.read_text()).get("eos_token_id"))
    sources += [getattr(config, "eos_token_id", None), tokenizer.eos_token_id]
    for src in sources:
        for t in (src if isinstance(src, list) else [src]):
            if isinstance(t, int) and t not in ids:
                ids.append(t)
    return ids


class Engine:
    def __init__(self, model_ref: str | ResolvedModel, dtype: str | torch.dtype = "auto", device: str | None = None,
                 max_num_seqs: int = 64, max_num_batched_tokens: int = 2048, block_size: int = 16,
                 num_kv_blocks: int | None = None, max_model_len: int | None = None,
                 enable_prefix_caching: bool = True, allow_fallback: bool = True,
                 async_scheduling: bool | None = None, tensor_parallel_size: int = 1, load_format: str = "auto"):
        for name, value in (("max_num_seqs", max_num_seqs), ("max_num_batched_tokens", max_num_batched_tokens),
                            ("block_size", block_size)):
            if not isinstance(value, int) or value < 1:
                raise LmsmithError(f"{name} must be a positive integer, got {value!r}")
        if num_kv_blocks is not None and num_kv_blocks < 1:
            raise LmsmithError(f"num_kv_blocks must be a positive integer, got {num_kv_blocks!r}")
        model = resolve_model(model_ref)  # once: the runner and the tokenizer read the same resolution
        self.model_ref = model.ref
        self.runner, handle, model_len = load_runner(model, dtype, device, max_model_len, allow_fallback,
                                                     tensor_parallel_size, load_format)
        self.tensor_parallel_size = tensor_parallel_size
        self.device = self.runner.device
        self.tokenizer = load_tokenizer(model)
        self.eos_token_ids = eos_ids_for(handle.base.dir, self.tokenizer, handle.config)
        if num_kv_blocks is None:
            num_kv_blocks = auto_num_blocks(self.runner, block_size, max_num_seqs, model_len)
        self.runner.allocate_kv(num_kv_blocks, block_size, max_num_seqs)
        capture_prefill = getattr(self.runner, "capture_prefill", None)
        if capture_prefill is not None:  # CUDA: piecewise graphs of prefill/mixed steps (serve.prefill_graphs)
            capture_prefill(max_num_batched_tokens)
        self.blocks = BlockManager(num_kv_blocks, block_size, enable_prefix_caching)
        # a lone sequence must always fit, otherwise it would preempt itself forever
        self.max_model_len = min(model_len, num_kv_blocks * block_size)
        self.scheduler = Scheduler(self.blocks, max_num_seqs, max_num_batched_tokens)
        self.vocab_size = self.runner.vocab_size
        self._grammar = None
        self._requests: dict[str, list[Sequence]] = {}
        self._pending: list[RequestOutput] = []
        self._stop_token_sets: dict[str, set[int]] = {}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        # False (offline LLM.generate): text is decoded once at the end unless stop strings need it per token
        self.incremental_text = True
        fast = getattr(self.tokenizer, "_tokenizer", None)
        cleanup = getattr(self.tokenizer, "clean_up_tokenization_spaces", False)
        self._decode = fast.decode if fast is not None and not cleanup and hasattr(fast, "decode") else None
        if async_scheduling is None:  # a CPU runs the model in the calling thread: nothing to overlap with
            async_scheduling = self.device.type == "cuda"
        self.async_scheduling = bool(async_scheduling) and getattr(self.runner, "supports_overlap", False)
        self._inflight: InFlight | None = None
        # set by a loop writing a step log (serve.step_log): each step leaves (prefill tokens, prefill sequences,
        # decode rows, overlapped) in `step_info`
        self.trace_steps = False
        self.step_info: tuple | None = None
        self._host_bufs = None
        self._flip = 0
        if self.async_scheduling and self.device.type == "cuda":
            self._host_bufs = [torch.zeros(max_num_seqs, dtype=torch.long, pin_memory=True) for _ in range(2)]
            self._events = [torch.cuda.Event() for _ in range(2)]

    # -- public API -----------------------------------------------------------------------------------------
    @property
    def native(self) -> bool:
        return bool(getattr(self.runner, "native", False))

    def encode(self, prompt: str | list[int]) -> list[int]:
        if isinstance(prompt, str):
            return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])
        if not isinstance(prompt, (list, tuple)):
            raise LmsmithError("a prompt must be a string or a list of token ids")
        # checked at C speed (a burst of 32 x 128 ids held the engine ~4 ms per step with a generator per id)
        if not set(map(type, prompt)) <= {int} and \
                not all(isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            raise LmsmithError("a prompt must be a string or a list of token ids")
        if prompt and (min(prompt) < 0 or max(prompt) >= self.vocab_size):
            bad = next(t for t in prompt if not 0 <= t < self.vocab_size)
            raise LmsmithError(f"token id {bad} is out of range for a vocabulary of {self.vocab_size}")
        return list(prompt)

    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams | None = None,
                    arrival_time: float | None = None) -> None:
        params = (params or SamplingParams()).validate()
        if request_id in self._requests:
            raise LmsmithError(f"request id {request_id!r} is already in use")
        ids = self.encode(prompt)
        if not ids:
            raise LmsmithError("the prompt is empty", "pass at least one token")
        if len(ids) >= self.max_model_len:
            raise LmsmithError(f"the prompt has {len(ids)} tokens but the model's context is {self.max_model_len} tokens",
                               "shorten the prompt (it must leave room for at least one new token)")
        matchers = [self.grammar.matcher(params.json_schema, params.json_object) if params.structured else None
                    for _ in range(params.n)]
        seqs = []
        arrival = arrival_time if arrival_time is not None else time.time()
        for i in range(params.n):
            seq = Sequence(request_id, i, ids, params, arrival)
            seq.read_offset = seq.prefix_offset = len(ids)
            if not params.greedy:
                seq.generator = make_generator(None if params.seed is None else params.seed + i, self.device)
            seq.matcher = matchers[i]
            if i > 0:
                seq.wait_for = seqs[0]
            seqs.append(seq)
            self.scheduler.add(seq)
        self._requests[request_id] = seqs
        self.prompt_tokens += len(ids)

    def abort(self, request_id: str) -> None:
        """Stop a request now and free its KV blocks; its final output (finish_reason "abort") comes from the next step()."""
        for seq in self._requests.pop(request_id, []):
            if seq.finished:
                continue
            self.scheduler.remove(seq)
            while seq.tokens and seq.tokens[-1] == PENDING:  # its in-flight token is dropped when it lands
                seq.tokens.pop()
            self._finish(seq, "abort", None)
            self._pending.append(self._output(seq, [], None))

    def update_weights(self, weights: Any) -> int:
        """Load new weights into the running model in place (HF parameter names -> tensors; a dict or pairs),
        without reloading from disk: online RL pushes the policy here after every update. The prefix cache is
        dropped (its KV was computed with the old weights). Returns the number of tensors loaded."""
        if self.has_unfinished():
            raise LmsmithError("cannot update weights while requests are running", "wait until they finish")
        loader = getattr(self.runner, "load_weights", None)
        if loader is None:
            raise LmsmithError(f"the {type(self.runner).__name__} cannot load new weights in place")
        n = loader(weights)
        self.blocks.reset_prefix_cache()
        return n

    def close(self) -> None:
        """Release what outlives the engine object: tensor-parallel worker processes and the process group."""
        close = getattr(self.runner, "close", None)
        if close is not None:
            close()

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished() or bool(self._pending) or self._inflight is not None

    def stats(self) -> dict[str, Any]:
        """Counters for metrics. Prefix-cache queries/hits are counted in tokens."""
        used = self.blocks.num_used
        return {
            "running": len(self.scheduler.running), "waiting": len(self.scheduler.waiting),
            "kv_blocks_total": self.blocks.num_blocks, "kv_blocks_used": used,
            "kv_usage": used / self.blocks.num_blocks,
            "prefix_cache_queries": self.blocks.prefix_queries, "prefix_cache_hits": self.blocks.prefix_hits,
            "prefix_cache_unit": "tokens", "preemptions": self.scheduler.num_preemptions,
            "prompt_tokens": self.prompt_tokens, "generation_tokens": self.generation_tokens,
            "prefill_graph_steps": getattr(getattr(self.runner, "prefill_graphs", None), "steps", 0),
            "prefill_graph_buckets": len(getattr(getattr(self.runner, "prefill_graphs", None), "buckets", ())),
            "prefill_graph_bytes": getattr(getattr(self.runner, "prefill_graphs", None), "memory_bytes", 0),
        }

    def step(self) -> list[RequestOutput]:
        outputs, self._pending = self._pending, []
        if self._inflight is not None:
            batch = self.scheduler.schedule_decodes(self._done_when_resolved) \
                if self.async_scheduling and self._all_overlappable() else None
            if batch is not None:  # launch the next decode from the device tokens, then read the previous step
                prev = self._inflight
                self._inflight = self._launch(batch, prev) if batch else None
                if self.trace_steps:
                    self.step_info = (0, 0, len(batch), 1)
                outputs += self._resolve(prev)
                return outputs
            prev, self._inflight = self._inflight, None
            outputs += self._resolve(prev)
        batch = self.scheduler.schedule()
        if not batch:
            return outputs
        if self.async_scheduling and all(s.num_tokens == 1 and s.samples and self._overlappable(s.seq) for s in batch):
            self._inflight = self._launch(batch, None)
            if self.trace_steps:
                self.step_info = (0, 0, len(batch), 1)
            return outputs
        if self.trace_steps:
            self.step_info = step_composition(batch)
        logits = self.runner.execute(batch)
        sampling = []
        for s in batch:
            seq = s.seq
            seq.num_computed = s.start + s.num_tokens
            seq.num_hashed_blocks = self.blocks.register_full(seq.block_table, seq.tokens, seq.num_computed,
                                                              seq.num_hashed_blocks)
            if s.samples:
                sampling.append(seq)
        if not sampling:
            return outputs
        masks = [self.grammar.mask(seq.matcher, logits.device) if seq.matcher is not None else None for seq in sampling]
        tokens, records = sample(logits, sampling, masks)
        now = time.time()
        for seq, tok, rec in zip(sampling, tokens, records):
            out = self._append_token(seq, tok, rec, now)
            if out is not None:
                outputs.append(out)
        return outputs

    # -- overlapped decoding ---------------------------------------------------------------------------------
    def _overlappable(self, seq: Sequence) -> bool:
        return seq.matcher is None and overlappable(seq.params)

    def _all_overlappable(self) -> bool:
        return all(self._overlappable(seq) for seq in self.scheduler.running)

    def _done_when_resolved(self, seq: Sequence) -> bool:
        """Finished whatever its pending token turns out to be: don't compute another one."""
        p = seq.params
        return (p.max_tokens is not None and seq.num_output >= p.max_tokens) or seq.num_tokens >= self.max_model_len

    def _launch(self, batch: list[ScheduledSeq], prev: InFlight | None) -> InFlight:
        """Run a decode step without waiting for it: sampled tokens stay on the device, a copy is queued to the host."""
        seqs = [s.seq for s in batch]
        src_rows = [prev.rows.get(id(seq), -1) if prev is not None else -1 for seq in seqs]
        logits, greedy = self.runner.decode_step(batch, prev.tokens if prev is not None else None, src_rows)
        tokens = sample_on_device(logits, seqs, greedy)
        index = []
        for seq in seqs:
            seq.num_computed += 1
            index.append(len(seq.tokens))
            seq.tokens.append(PENDING)
        n = len(seqs)
        event = None
        if self._host_bufs is not None:
            event = self._events[self._flip]
            ring = getattr(self.runner, "greedy_on_host", None) if tokens is greedy else None
            if ring is not None:
                host = ring  # the step wrote its tokens to pinned memory itself: no copy on the stream
            else:
                host = self._host_bufs[self._flip][:n]  # alternate: the previous step's tokens are still unread
                host.copy_(tokens, non_blocking=True)
            self._flip ^= 1
            event.record()
        else:
            host = tokens
        return InFlight(seqs, tokens, host, event, {id(seq): i for i, seq in enumerate(seqs)}, index)

    def _resolve(self, fl: InFlight) -> list[RequestOutput]:
        """Read a launched step's tokens and process them as a synchronous step would have."""
        if fl.event is not None:
            fl.event.synchronize()
        tokens = fl.host.tolist()
        outputs = []
        now = time.time()
        for seq, tok, i in zip(fl.seqs, tokens, fl.index):
            if seq.finished:  # aborted, or stopped one step earlier: this token was extra
                continue
            later = seq.tokens[i + 1:]  # a newer in-flight token (the step launched just before this resolve)
            del seq.tokens[i:]
            seq.num_hashed_blocks = self.blocks.register_full(seq.block_table, seq.tokens, min(seq.num_computed, i),
                                                              seq.num_hashed_blocks)
            out = self._append_token(seq, tok, None, now)
            if not seq.finished:
                seq.tokens += later
            if out is not None:
                outputs.append(out)
        return outputs

    # -- internals ------------------------------------------------------------------------------------------
    @property
    def grammar(self):
        if self._grammar is None:
            from lmsmith.serve.structured import GrammarCompiler

            self._grammar = GrammarCompiler(self.tokenizer, self.vocab_size, self.eos_token_ids)
        return self._grammar

    def _append_token(self, seq: Sequence, tok: int, rec: dict | None, now: float) -> RequestOutput | None:
        p = seq.params
        seq.append(tok)
        self.generation_tokens += 1
        if seq.metrics.first_token_time is None:
            seq.metrics.first_token_time = now
        seq.metrics.token_times.append(now)
        if rec is not None and seq.logprobs is not None:
            seq.logprobs.append(rec)
        reason, stop = None, None
        is_eos = tok in self.eos_token_ids and not p.ignore_eos
        if is_eos:
            reason = "stop"
        elif tok in p.stop_token_ids:
            reason, stop = "stop", tok
        elif self.incremental_text or p.stop:
            self._detokenize(seq)
            stop = self._find_stop_string(seq)
            if stop is not None:
                reason = "stop"
        if reason is None and seq.matcher is not None:
            seq.matcher.consume_token(tok)
            if seq.matcher.is_stopped() or seq.matcher.is_error():
                reason = "stop"
        if reason is None and p.max_tokens is not None and seq.num_output >= p.max_tokens:
            reason = "length"
        if reason is None and seq.num_tokens >= self.max_model_len:
            reason = "length"
        if reason is not None:
            if not (self.incremental_text or p.stop):
                self._detokenize_all(seq)
            self._finish(seq, reason, stop)
            self.scheduler.remove(seq)
        elif not (self.incremental_text or rec is not None):
            return None  # offline: only final outputs are read
        return self._output(seq, [tok], rec)

    def _detokenize(self, seq: Sequence) -> None:
        """Incremental decoding that never cuts a multi-byte character: text is only added once it decodes cleanly."""
        skip = seq.params.skip_special_tokens
        toks = seq.tokens
        decode = self._decode or self.tokenizer.decode  # the Rust tokenizer directly: no per-call conversions
        prefix = decode(toks[seq.prefix_offset:seq.read_offset], skip_special_tokens=skip)
        full = decode(toks[seq.prefix_offset:], skip_special_tokens=skip)
        if len(full) > len(prefix) and not full.endswith("\ufffd"):
            seq.text += full[len(prefix):]
            seq.prefix_offset = seq.read_offset
            seq.read_offset = len(toks)

    def _detokenize_all(self, seq: Sequence) -> None:
        """The text incremental decoding would have produced, decoded once (replayed per token only when the
        output ends in an unfinished multi-byte character, where the two can differ)."""
        decode = self._decode or self.tokenizer.decode
        full = decode(seq.tokens[seq.prefix_offset:], skip_special_tokens=seq.params.skip_special_tokens)
        if not full.endswith("\ufffd"):
            seq.text += full
            seq.prefix_offset = seq.read_offset = len(seq.tokens)
            return
        end = len(seq.tokens)
        for upto in range(seq.read_offset + 1, end + 1):
            seq.tokens, rest = seq.tokens[:upto], seq.tokens[upto:]
            self._detokenize(seq)
            seq.tokens += rest

    def _find_stop_string(self, seq: Sequence) -> str | None:
        stops = seq.params.stop
        if not stops:
            return None
        longest = max(len(s) for s in stops)
        start = max(0, seq.emitted_chars - longest)
        best = None
        for s in stops:
            i = seq.text.find(s, start)
            if i != -1 and (best is None or i < best[0]):
                best = (i, s)
        if best is None:
            return None
        seq.text = seq.text[:best[0]]
        return best[1]

    def _finish(self, seq: Sequence, reason: str, stop: str | int | None) -> None:
        seq.status = Status.FINISHED
        seq.finish_reason = reason
        seq.stop_reason = stop
        seq.metrics.finish_time = time.time()
        siblings = self._requests.get(seq.request_id, [])
        if all(s.finished for s in siblings):
            self._requests.pop(seq.request_id, None)

    def _output(self, seq: Sequence, new: list[int], rec: dict | None) -> RequestOutput:
        # hold back a possible partial stop string until it is decided
        hold = 0 if seq.finished or not seq.params.stop else max(len(s) for s in seq.params.stop) - 1
        upto = max(seq.emitted_chars, len(seq.text) - hold)
        delta = seq.text[seq.emitted_chars:upto]
        seq.emitted_chars = upto
        text = seq.text[:upto]
        return RequestOutput(
            request_id=seq.request_id, index=seq.index, new_token_ids=new, text_delta=delta,
            token_ids=seq.output_ids, text=text, finished=seq.finished, finish_reason=seq.finish_reason,
            stop_reason=seq.stop_reason, logprobs=[rec] if rec is not None else ([] if seq.logprobs is not None else None),
            prompt_token_ids=seq.prompt_ids, num_cached_tokens=seq.num_cached_tokens, metrics=seq.metrics)
