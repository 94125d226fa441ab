"""Hashed n-gram features of a normalized text, computed with numpy (no vocabulary to ship or drift).

Character 2..5-grams (with the word boundaries as spaces) carry inflection and spelling variants across
Czech, Polish and Slovene; word unigrams and bigrams carry phrases. Optional extras for Slavic inflection:
word-prefix stems (the first k characters of each word, so "ignoruj", "ignorujte", "ignorować" share
"ignor"), bigrams of those stems, and skip-bigrams (word i with word i+2, so "ignore ALL previous" and
"ignore the previous" share "ignore _ previous"). Each n-gram is hashed (a fixed polynomial hash, stable
across processes) into `dim` buckets; values are 1 + log(count), L2-normalized.
"""

from __future__ import annotations

import re
import zlib

import numpy as np

_MULT = np.uint64(0x100000001B3)
_MIX = np.uint64(0x9E3779B97F4A7C15)
_WORD = re.compile(r"\w+")


def _char_ngrams(text: str, lo: int, hi: int) -> list[np.ndarray]:
    cp = np.frombuffer((" " + text + " ").encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    out = []
    with np.errstate(over="ignore"):
        for n in range(lo, hi + 1):
            m = len(cp) - n + 1
            if m <= 0:
                break
            h = np.full(m, np.uint64(n), dtype=np.uint64)
            for k in range(n):
                h = h * _MULT + cp[k:k + m]
            out.append(h * _MIX)
    return out


def _hash(grams: list[str]) -> np.ndarray:
    with np.errstate(over="ignore"):
        return np.array([zlib.crc32(g.encode()) ^ 0xA5A5A5A5 for g in grams], dtype=np.uint64) * _MIX


def _word_ngrams(words: list[str], prefixes: tuple[int, ...] = (), skip: bool = False) -> np.ndarray:
    grams = words + [a + " " + b for a, b in zip(words, words[1:])]
    if skip:
        grams += [a + " _ " + b for a, b in zip(words, words[2:])]
    for k in prefixes:  # "\x01k" marks a stem so that a short word and its stem do not share a bucket
        stems = [w[:k] for w in words if len(w) > k]
        grams += [f"\x01{k}{s}" for s in stems]
        st = [w[:k] for w in words]
        grams += [f"\x02{k}{a} {b}" for a, b in zip(st, st[1:])]
    return _hash(grams)


_RAW_SALT = np.uint64(0x5BD1E9955BD1E995)
_SPACE = re.compile(r"\s+")


def featurize(norm_text: str, dim: int, char_range: tuple[int, int] = (2, 5), norm: str = "l2",
              prefixes: tuple[int, ...] = (), skip: bool = False, raw_text: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(bucket indices, values) of one normalized text: a sparse vector of length `dim`, L2- or L1-normalized
    (L1: the score is a mean over the text's n-grams, so it does not drift with length). With `raw_text`, also
    character 3-5-grams of the lowercased text WITH its diacritics (hashed apart from the folded ones)."""
    parts = _char_ngrams(norm_text, *char_range)
    if raw_text is not None:
        with np.errstate(over="ignore"):
            parts += [h ^ _RAW_SALT for h in _char_ngrams(_SPACE.sub(" ", raw_text.lower()).strip(), 3, 5)]
    words = _WORD.findall(norm_text)
    if words:
        parts.append(_word_ngrams(words, tuple(prefixes), skip))
    h = np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)
    if not len(h):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    idx, counts = np.unique((h >> np.uint64(20)) % np.uint64(dim), return_counts=True)
    val = 1.0 + np.log(counts.astype(np.float32))
    val /= np.linalg.norm(val) if norm == "l2" else val.sum()
    return idx.astype(np.int64), val.astype(np.float32)
