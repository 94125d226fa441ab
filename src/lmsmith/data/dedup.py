"""Exact and near-duplicate detection.

Exact: a 64-bit hash of the normalized text (see `normalize.text_hash`); a set of seen hashes.

Near: MinHash over word n-gram shingles with banded LSH (Broder 1997; Leskovec et al., "Mining of
Massive Datasets", ch. 3), written with numpy. Signatures are computed by the worker processes and
written to disk next to each chunk; the single deduplication pass then streams them in corpus order.
Only the LSH band buckets (one 64-bit key -> first document index, per band) and the exact-hash set live
in memory, never the texts, and the signatures of kept documents are read back from a disk-backed numpy
memmap to verify a candidate pair: memory is O(documents x bands) small integers, so corpora larger
than RAM deduplicate fine. The first document of a cluster is kept; later members are removed.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 1.x has only trapz


def shingles(text: str, n: int = 5) -> np.ndarray:
    """32-bit hashes (crc32) of the word n-grams of the lowercased text; short texts give one shingle."""
    words = _WORD.findall(text.lower())
    if len(words) < n:
        grams = [" ".join(words)]
    else:
        grams = [" ".join(words[i:i + n]) for i in range(len(words) - n + 1)]
    return np.fromiter((zlib.crc32(g.encode()) for g in set(grams)), dtype=np.uint64)


@dataclass
class MinHasher:
    """num_perm multiply-shift hash functions h(x) = ((a x + b) mod 2^64) >> 32 (Dietzfelbinger et al.),
    a random and odd: a 2-universal family computed with wrapping uint64 arithmetic in numpy."""

    num_perm: int = 128
    shingle_size: int = 5
    seed: int = 1
    a: np.ndarray = field(init=False, repr=False)
    b: np.ndarray = field(init=False, repr=False)

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        self.a = rng.integers(0, 1 << 63, size=self.num_perm, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
        self.b = rng.integers(0, 1 << 63, size=self.num_perm, dtype=np.uint64)

    def signature(self, text: str) -> np.ndarray:
        h = shingles(text, self.shingle_size)
        with np.errstate(over="ignore"):
            vals = (np.outer(self.a, h) + self.b[:, None]) >> np.uint64(32)
        return vals.min(axis=1).astype(np.uint32)


def jaccard_estimate(s1: np.ndarray, s2: np.ndarray) -> float:
    return float(np.mean(s1 == s2))


def optimal_bands(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows) minimizing false positive + false negative probability mass around the threshold."""
    xs = np.linspace(0, 1, 201)
    best, best_err = (1, num_perm), float("inf")
    for b in range(1, num_perm + 1):
        if num_perm % b:
            continue
        r = num_perm // b
        p = 1 - (1 - xs ** r) ** b  # probability a pair with Jaccard x shares a bucket
        fp = _trapezoid(np.where(xs < threshold, p, 0), xs)
        fn = _trapezoid(np.where(xs >= threshold, 1 - p, 0), xs)
        if fp + fn < best_err:
            best, best_err = (b, r), fp + fn
    return best


class NearDedup:
    """Streaming LSH index: `add(index, signature)` returns the index of the kept document it
    near-duplicates (verified estimated Jaccard >= threshold), or None and indexes it as kept."""

    def __init__(self, threshold: float = 0.8, num_perm: int = 128, sig_store: Path | None = None,
                 capacity: int = 1 << 16):
        self.threshold = threshold
        self.num_perm = num_perm
        self.bands, self.rows = optimal_bands(threshold, num_perm)
        self.buckets: list[dict[int, int]] = [dict() for _ in range(self.bands)]
        self._path = sig_store
        self._sigs = self._alloc(capacity)
        self.clusters: dict[int, list[int]] = {}  # kept index -> removed indices

    def _alloc(self, n: int) -> np.ndarray:
        if self._path is None:
            return np.zeros((n, self.num_perm), dtype=np.uint32)
        return np.lib.format.open_memmap(self._path, mode="w+", dtype=np.uint32, shape=(n, self.num_perm))

    def _ensure(self, index: int) -> None:
        if index < len(self._sigs):
            return
        n = max(index + 1, 2 * len(self._sigs))
        if self._path is None:
            new = np.zeros((n, self.num_perm), dtype=np.uint32)
            new[: len(self._sigs)] = self._sigs
            self._sigs = new
            return
        old = self._sigs
        tmp = self._path.with_suffix(".grow.npy")
        new = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint32, shape=(n, self.num_perm))
        new[: len(old)] = old
        new.flush()
        del old, self._sigs
        tmp.replace(self._path)
        self._sigs = np.load(self._path, mmap_mode="r+")

    def _keys(self, sig: np.ndarray) -> list[int]:
        return band_keys(sig[None, :], self.bands, self.rows)[0].tolist()

    def add(self, index: int, sig: np.ndarray, keys: list[int] | None = None) -> int | None:
        keys = self._keys(sig) if keys is None else keys
        checked: set[int] = set()
        for band, key in enumerate(keys):
            other = self.buckets[band].get(key)
            if other is None or other in checked:
                continue
            checked.add(other)
            if jaccard_estimate(sig, self._sigs[other]) >= self.threshold:
                self.clusters.setdefault(other, []).append(index)
                return other
        self._ensure(index)
        self._sigs[index] = sig
        for band, key in enumerate(keys):
            self.buckets[band].setdefault(key, index)
        return None


def band_keys(sigs: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """(n, bands) uint64 LSH bucket keys (FNV-1a over each band's rows): the same in every process and
    on every machine, unlike Python's salted `hash`, so keys computed by distributed workers agree."""
    x = np.ascontiguousarray(sigs[:, : bands * rows]).reshape(len(sigs), bands, rows).astype(np.uint64)
    h = np.full((len(sigs), bands), 0xCBF29CE484222325, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for j in range(rows):
            h = (h ^ x[:, :, j]) * np.uint64(0x100000001B3)
    return h


def shared_buckets(keys: np.ndarray, first_index: int = 0) -> dict[int, np.ndarray]:
    """One band's keys for documents first_index, first_index+1, ... -> {key: sorted document indices} for
    the keys two or more documents share (the only buckets that can hold a duplicate pair)."""
    order = np.argsort(keys, kind="stable")
    sk = keys[order]
    if len(sk) == 0:
        return {}
    starts = np.flatnonzero(np.r_[True, sk[1:] != sk[:-1]])
    ends = np.r_[starts[1:], len(sk)]
    return {int(sk[a]): order[a:b] + first_index for a, b in zip(starts, ends) if b - a > 1}


def chunk_band_keys(work: Path, chunk: int, bands: int, rows: int) -> np.ndarray:
    """(bands, n) keys of one cleaning chunk: its `.keys.npy` (written by the chunk's worker), else computed
    from its signatures (a chunk finished by an older run)."""
    p = work / f"chunk-{chunk:05d}.keys.npy"
    if p.is_file():
        return np.load(p, mmap_mode="r")
    return band_keys(np.load(work / f"chunk-{chunk:05d}.npz")["sigs"], bands, rows).T


def band_buckets(work: str, chunks: list[int], band: int, bands: int, rows: int) -> dict[int, np.ndarray]:
    """One band's shared buckets over the whole corpus (every chunk in order): a task per band on Ray."""
    keys = [np.asarray(chunk_band_keys(Path(work), c, bands, rows)[band]) for c in chunks]
    return shared_buckets(np.concatenate(keys) if keys else np.zeros(0, dtype=np.uint64))


class BucketReplay:
    """NearDedup's decisions replayed from precomputed shared buckets (`shared_buckets` per band, which
    distributed workers compute over the whole corpus): documents are added in corpus order, and each is
    kept or dropped exactly as `NearDedup.add` would, but only buckets shared by two or more documents and
    the signatures of kept documents in them are held, not an index of every document."""

    def __init__(self, threshold: float, buckets: list[dict[int, np.ndarray]], rows: int):
        self.threshold = threshold
        self.buckets = buckets
        self.bands, self.rows = len(buckets), rows
        self.first_kept: list[dict[int, int]] = [dict() for _ in buckets]
        self.sigs: dict[int, np.ndarray] = {}
        self.clusters: dict[int, list[int]] = {}

    def add(self, index: int, sig: np.ndarray, keys: list[int]) -> int | None:
        checked: set[int] = set()
        shared = [b for b, k in enumerate(keys) if k in self.buckets[b]]
        for b in shared:
            other = self.first_kept[b].get(keys[b])
            if other is None or other in checked:
                continue
            checked.add(other)
            if jaccard_estimate(sig, self.sigs[other]) >= self.threshold:
                self.clusters.setdefault(other, []).append(index)
                return other
        for b in shared:
            if keys[b] not in self.first_kept[b]:
                self.first_kept[b][keys[b]] = index
                self.sigs[index] = sig
        return None


def cluster_sizes(clusters: dict[int, list[int]]) -> dict[str, int]:
    sizes = [len(v) + 1 for v in clusters.values()]
    return {"clusters": len(sizes), "removed": sum(sizes) - len(sizes), "largest": max(sizes, default=0)}
