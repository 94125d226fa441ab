"""Continuous batching: every step picks which sequences run and how many of their tokens, under a token budget.

Running sequences go first (decode = 1 token, an unfinished prefill = its next chunk), then waiting ones are
admitted while the budget, `max_num_seqs` and free KV blocks allow. When a running sequence needs a block and
none is free, the most recently admitted sequence is preempted: its blocks are released and it recomputes
later (its full blocks usually come back from the prefix cache).

`schedule_decodes` is the overlapped loop's variant: it plans the next step while the previous one still runs
on the GPU, so it can only say "every running sequence decodes one more token" (their newest tokens are not
known yet); anything else (admissions, prefill chunks, preemption) waits for the in-flight step.
"""

from __future__ import annotations

import os
import time
from collections import deque
from dataclasses import dataclass

from lmsmith.serve.block_manager import BlockManager
from lmsmith.serve.sequence import Sequence, Status


def admit_delay_s() -> float:
    try:
        return max(0.0, float(os.environ.get("LMSMITH_ADMIT_DELAY_MS", "0") or 0)) / 1000
    except ValueError:
        return 0.0


@dataclass
class ScheduledSeq:
    seq: Sequence
    start: int  # first position computed this step (== seq.num_computed before the step)
    num_tokens: int  # tokens computed this step

    @property
    def samples(self) -> bool:
        """True when this chunk reaches the end of the sequence, so its last position yields the next token."""
        return self.start + self.num_tokens == self.seq.num_tokens


class Scheduler:
    def __init__(self, blocks: BlockManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.blocks = blocks
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.num_preemptions = 0
        self.admit_delay = admit_delay_s()

    def admit_now(self) -> bool:
        """Whether waiting sequences may be admitted this step. Always, unless an admission delay is set
        ($LMSMITH_ADMIT_DELAY_MS, off by default) and sequences are running: then new prompts wait until the
        oldest has waited that long or they fill a step's token budget, so a trickle of arrivals (a closed-loop
        client's next wave) shares one prefill/mixed step instead of one each (on a GPU every such step costs
        ~6-9 ms of mostly host time however few its tokens), while the running sequences keep decoding."""
        if not self.admit_delay or not self.running or not self.waiting:
            return True
        if time.time() - self.waiting[0].metrics.arrival_time >= self.admit_delay:
            return True
        return sum(s.num_tokens for s in self.waiting) >= self.max_num_batched_tokens

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def _grow(self, seq: Sequence, num_new: int) -> bool:
        need = self.blocks.blocks_needed(seq.num_computed + num_new) - len(seq.block_table)
        if need <= 0:
            return True
        if need > self.blocks.num_free:
            return False
        seq.block_table.extend(self.blocks.allocate(need))
        return True

    def free(self, seq: Sequence) -> None:
        self.blocks.release(seq.block_table)
        seq.block_table = []
        seq.num_computed = 0
        seq.num_hashed_blocks = 0

    def _preempt(self, seq: Sequence) -> None:
        self.free(seq)
        seq.status = Status.WAITING
        self.waiting.appendleft(seq)
        self.num_preemptions += 1

    def remove(self, seq: Sequence) -> None:
        """Take a sequence out of the queues and free its blocks (finish or abort)."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.free(seq)

    def schedule_decodes(self, done) -> list[ScheduledSeq] | None:
        """One decode token for every running sequence, except those `done(seq)` says have finished whatever
        their pending token is (max_tokens, context length). None when the normal schedule may differ: a
        sequence is mid-prefill, a waiting one could be admitted, the token budget is short, or the KV blocks
        for the next slots are not free (preemption needs the real tokens)."""
        if self.waiting and len(self.running) < self.max_num_seqs and self.admit_now():
            return None
        seqs = []
        need = 0
        for seq in self.running:
            if seq.num_computed != seq.num_tokens - 1:
                return None
            if done(seq):
                continue
            need += max(0, self.blocks.blocks_needed(seq.num_tokens) - len(seq.block_table))
            seqs.append(seq)
        if need > self.blocks.num_free or len(seqs) > self.max_num_batched_tokens:
            return None
        for seq in seqs:
            self._grow(seq, 1)
        return [ScheduledSeq(seq, seq.num_computed, 1) for seq in seqs]

    def schedule(self) -> list[ScheduledSeq]:
        budget = self.max_num_batched_tokens
        out: list[ScheduledSeq] = []
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(seq.num_tokens - seq.num_computed, budget)
            while not self._grow(seq, n):
                victim = self.running.pop()  # the newest admitted sequence gives its blocks back
                self._preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.status is Status.RUNNING:
                out.append(ScheduledSeq(seq, seq.num_computed, n))
                budget -= n
                i += 1
        if preempted:
            return out  # memory is short: admitting now would only thrash
        admitted_any = False
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs and (admitted_any or self.admit_now()):
            seq = self.waiting[0]
            w = seq.wait_for
            if w is not None and w.status is Status.RUNNING and w.num_computed < len(seq.prompt_ids):
                break  # sample 0 is computing the shared prompt; its blocks will be reused (FCFS order kept)
            hits = self.blocks.match_prefix(seq.tokens)
            n = min(seq.num_tokens - len(hits) * self.blocks.block_size, budget)
            reuse_free = sum(1 for b in hits if self.blocks.ref_counts[b] == 0)
            need = self.blocks.blocks_needed(len(hits) * self.blocks.block_size + n) - len(hits)
            if need + reuse_free > self.blocks.num_free:
                if not self.running and not out and not admitted_any:
                    # nothing else can free memory: shrink the chunk to what fits
                    fit = (self.blocks.num_free - reuse_free) * self.blocks.block_size
                    if fit <= 0:
                        break
                    n = min(n, fit)
                    need = self.blocks.blocks_needed(len(hits) * self.blocks.block_size + n) - len(hits)
                else:
                    break
            self.waiting.popleft()
            self.blocks.count_lookup(seq.num_tokens, len(hits))
            self.blocks.take(hits)
            seq.block_table = list(hits)
            seq.num_computed = len(hits) * self.blocks.block_size
            seq.num_hashed_blocks = len(hits)
            if not seq.admitted_once:
                seq.num_cached_tokens = seq.num_computed
                seq.admitted_once = True
                seq.metrics.first_scheduled_time = time.time()
            seq.block_table.extend(self.blocks.allocate(need))
            seq.status = Status.RUNNING
            self.running.append(seq)
            out.append(ScheduledSeq(seq, seq.num_computed, n))
            budget -= n
            admitted_any = True
        return out
