"""The per-chunk work of `lmsmith data clean`, run in worker processes or as Ray tasks: the per-document steps
(normalize -> langid -> quality -> pii) on one chunk, then its survivors, their hashes, MinHash signatures and
LSH band keys written to `OUTPUT/_work/` (the chunk's `.done.json` last: it marks the chunk finished)."""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections import deque
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from lmsmith.data.clean_config import FAULT_ENV, CleanConfig
from lmsmith.data.clean_io import atomic_write, write_jsonl_gz
from lmsmith.data.clean_report import Tally
from lmsmith.data.dedup import MinHasher, band_keys, optimal_bands
from lmsmith.data.normalize import normalize_text, text_hash
from lmsmith.data.quality import quality_reason


def filter_document(doc: dict, cfg: CleanConfig, tally: Tally, keep_langs: set[str]) -> dict[str, Any] | None:
    """One document through normalize, langid, quality and pii: its output record, or None when a step removed
    it (the tally records each step's in and out, and why)."""
    from lmsmith.data.langid import detect
    from lmsmith.data.pii import scrub_pii

    raw = doc["text"]
    text = normalize_text(raw, cfg.unicode_form) if cfg.normalize else raw
    lang, score = doc.get("lang", "und"), 1.0
    if cfg.langid:
        lang, score = detect(text, tuple(cfg.langid_candidates))
    if not text.strip():
        tally.record("normalize", lang, len(raw), None, "empty", doc["id"], raw or "(empty)")
        return None
    tally.record("normalize", lang, len(raw), len(text))
    if cfg.langid:
        if score < cfg.langid_threshold:
            tally.record("langid", lang, len(text), None, "low_confidence", doc["id"], text, f"{lang} p={score:.2f}")
            return None
        if keep_langs and lang not in keep_langs:
            tally.record("langid", lang, len(text), None, "other_language", doc["id"], text, f"{lang} p={score:.2f}")
            return None
        tally.record("langid", lang, len(text), len(text))
    elif keep_langs and lang not in keep_langs:
        tally.record("langid", lang, len(text), None, "other_language", doc["id"], text, f"{lang} (given)")
        return None
    if cfg.quality:
        reason = quality_reason(text, lang, cfg)
        if reason:
            tally.record("quality", lang, len(text), None, reason, doc["id"], text)
            return None
        tally.record("quality", lang, len(text), len(text))
    if cfg.pii:
        before = len(text)
        text, counts = scrub_pii(text, tuple(cfg.pii_kinds))
        tally.pii.update(counts)
        tally.record("pii", lang, before, len(text))
    rec = {"id": doc["id"], "text": text, "lang": lang}
    if cfg.langid:
        rec["lang_score"] = round(score, 4)
    return rec


def write_chunk(stem: Path, recs: list[dict], hashes: list[int], sigs: list[np.ndarray], cfg: CleanConfig) -> None:
    """The chunk's survivors (`.jsonl.gz`), their exact-dedup hashes, signatures, languages and sizes (`.npz`)
    and, for near dedup, their LSH band keys, a column per band (`.keys.npy`: the corpus-wide band grouping on
    Ray reads them). Each file is written to a temporary name and renamed."""
    write_jsonl_gz(stem.with_suffix(".jsonl.gz"), recs)
    np.savez(str(stem) + ".tmp.npz", hashes=np.array(hashes, dtype=np.uint64),
             sigs=np.stack(sigs) if sigs else np.zeros((0, cfg.num_perm), dtype=np.uint32),
             langs=np.array([r["lang"] for r in recs], dtype=object).astype(str),
             chars=np.array([len(r["text"]) for r in recs], dtype=np.int64))
    os.replace(str(stem) + ".tmp.npz", str(stem) + ".npz")
    if cfg.near_dedup:
        bands, rows = optimal_bands(cfg.near_threshold, cfg.num_perm)
        keys = band_keys(np.stack(sigs), bands, rows).T if sigs else np.zeros((bands, 0), dtype=np.uint64)
        np.save(str(stem) + ".keys.tmp.npy", np.ascontiguousarray(keys))
        os.replace(str(stem) + ".keys.tmp.npy", str(stem) + ".keys.npy")


def process_chunk(index: int, docs: list[dict], cfg: CleanConfig, work: Path) -> dict:
    """Run the per-document steps on one chunk; write survivors, hashes and signatures; return its tally."""
    tally = Tally(cfg.examples)
    hasher = MinHasher(cfg.num_perm, cfg.shingle_size)
    keep_langs = set(cfg.lang)
    out_recs: list[dict] = []
    hashes: list[int] = []
    sigs: list[np.ndarray] = []
    for doc in docs:
        rec = filter_document(doc, cfg, tally, keep_langs)
        if rec is None:
            continue
        out_recs.append(rec)
        hashes.append(text_hash(rec["text"]) if cfg.exact_dedup else 0)
        if cfg.near_dedup:
            sigs.append(hasher.signature(rec["text"]))
    stem = work / f"chunk-{index:05d}"
    write_chunk(stem, out_recs, hashes, sigs, cfg)
    import resource

    result = {"index": index, "docs": len(docs), "kept": len(out_recs), "tally": tally.to_dict(),
              "worker_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    atomic_write(stem.with_suffix(".done.json"), json.dumps(result))
    return result


def run_chunk(args: tuple) -> dict:
    """`process_chunk` as a worker or Ray task runs it: (index, docs, config as a dict, work directory)."""
    index, docs, cfg_dict, work = args
    fault = os.environ.get(FAULT_ENV, "")
    if fault == f"worker-exit:{index}":
        marker = Path(work) / f"fault-{index}"
        if not marker.exists():
            marker.touch()
            os._exit(1)  # a crashed worker: the executor must retry this chunk
    return process_chunk(index, docs, CleanConfig.model_validate(cfg_dict), Path(work))


def map_chunks(cfg: CleanConfig, chunks: Iterator[tuple]) -> Iterator[dict]:
    """Run `run_chunk` over the chunks on the configured executor, results in chunk order, with at most
    two chunks per worker in flight (memory stays bounded)."""
    if cfg.executor == "ray":
        from lmsmith.data import ray_executor

        yield from ray_executor.ordered_map(run_chunk, ((a,) for a in chunks), max_in_flight=2 * ray_executor.cluster_cpus())
        return
    if cfg.workers == 1:
        for args in chunks:
            yield run_chunk(args)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(cfg.workers)
    pending: deque = deque()
    try:
        for args in chunks:
            pending.append(pool.apply_async(run_chunk, (args,)))
            while len(pending) >= 2 * cfg.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()
