"""Paged KV-cache bookkeeping: fixed-size blocks, reference counts, and a prefix cache keyed by block hashes.

A block is `block_size` token slots in every layer's K/V cache. A sequence owns a block table (list of block
ids). A full block's content is determined by its tokens and everything before them, so its hash chains the
parent block's hash; identical prompt prefixes map to the same blocks and are computed once. Freed blocks keep
their hash and stay reusable until the allocator recycles them (least recently freed first).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Sequence as Seq

from lmsmith.errors import LmsmithError


def block_hash(parent: int | None, tokens: Seq[int]) -> int:
    return hash((parent, tuple(tokens)))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, enable_prefix_caching: bool = True):
        if num_blocks < 1 or block_size < 1:
            raise LmsmithError(f"need at least one KV block of at least one token (got {num_blocks} x {block_size})")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.ref_counts = [0] * num_blocks
        self.block_hashes: list[int | None] = [None] * num_blocks
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))  # LRU order
        self.cached: dict[int, int] = {}  # hash -> block id
        self.prefix_queries = 0  # tokens looked up in the prefix cache
        self.prefix_hits = 0  # tokens found there

    # -- capacity -------------------------------------------------------------------------------------------
    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return self.num_blocks - len(self.free)

    def blocks_needed(self, num_tokens: int) -> int:
        return -(-num_tokens // self.block_size)

    # -- prefix cache ---------------------------------------------------------------------------------------
    def hashes_for(self, tokens: Seq[int]) -> list[int]:
        """Chained hashes of every full block of `tokens`."""
        out: list[int] = []
        parent = None
        bs = self.block_size
        for i in range(len(tokens) // bs):
            parent = block_hash(parent, tokens[i * bs:(i + 1) * bs])
            out.append(parent)
        return out

    def match_prefix(self, tokens: Seq[int]) -> list[int]:
        """Block ids caching the longest computed prefix of `tokens` (at least one token is left to compute)."""
        if not self.enable_prefix_caching:
            return []
        usable = (len(tokens) - 1) // self.block_size  # the last token must run to give logits
        hits: list[int] = []
        for h in self.hashes_for(tokens[:usable * self.block_size]):
            b = self.cached.get(h)
            if b is None:
                break
            hits.append(b)
        return hits

    def count_lookup(self, num_tokens: int, hit_blocks: int) -> None:
        """Record one admitted lookup for the hit-rate counters (in tokens)."""
        if self.enable_prefix_caching:
            self.prefix_queries += (num_tokens - 1) // self.block_size * self.block_size
            self.prefix_hits += hit_blocks * self.block_size

    def take(self, blocks: list[int]) -> None:
        """Add a reference to cached blocks found by match_prefix."""
        for b in blocks:
            if self.ref_counts[b] == 0:
                del self.free[b]
            self.ref_counts[b] += 1

    def register_full(self, block_table: list[int], tokens: Seq[int], num_computed: int, start_block: int) -> int:
        """Record hashes of blocks that became full and computed; return the index of the first non-hashed block."""
        if not self.enable_prefix_caching:
            return start_block
        bs = self.block_size
        full = min(num_computed // bs, len(block_table))
        parent = self.block_hashes[block_table[start_block - 1]] if start_block > 0 else None
        for i in range(start_block, full):
            h = block_hash(parent, tokens[i * bs:(i + 1) * bs])
            b = block_table[i]
            if self.block_hashes[b] is None:
                self.block_hashes[b] = h
                self.cached.setdefault(h, b)
            parent = h
        return max(full, start_block)

    # -- allocation -----------------------------------------------------------------------------------------
    def allocate(self, n: int) -> list[int]:
        if n > len(self.free):
            raise RuntimeError(f"out of KV blocks: need {n}, have {len(self.free)}")
        out = []
        for _ in range(n):
            b, _ = self.free.popitem(last=False)
            h = self.block_hashes[b]
            if h is not None:  # evict a cached block
                if self.cached.get(h) == b:
                    del self.cached[h]
                self.block_hashes[b] = None
            self.ref_counts[b] = 1
            out.append(b)
        return out

    def release(self, blocks: list[int]) -> None:
        """Drop one reference per block; tail blocks are freed first so they get recycled first."""
        for b in reversed(blocks):
            self.ref_counts[b] -= 1
            assert self.ref_counts[b] >= 0, "block freed twice"
            if self.ref_counts[b] == 0:
                self.free[b] = None

    def reset_prefix_cache(self) -> None:
        self.cached.clear()
        for b in self.free:
            self.block_hashes[b] = None
