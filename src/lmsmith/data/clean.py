"""`lmsmith data clean`: a streaming, multi-process, resumable corpus cleaning pipeline.

Steps, in order (each can be switched off): normalize -> langid -> quality -> pii -> exact dedup ->
near dedup. The input is read as a stream and cut into chunks of `chunk_docs` documents; worker
processes run the per-document steps on a chunk and write its survivors, their hashes and MinHash
signatures into `OUTPUT/_work/` (the chunk's `.done.json` is written last and marks it finished, so
a re-run after an interruption skips finished chunks). Deduplication then streams the hashes and
signatures in corpus order in one process (only hashes and LSH buckets in memory, see `dedup`), and
the survivors are written as `shard-NNNNN.jsonl.gz` with `manifest.json`, `report.json` and `report.md`.

Memory is bounded by (workers x 2) chunks in flight plus the dedup index: texts never accumulate.

`clean` runs four phases, each a function here: `run_chunks` (read, normalize and filter, per chunk:
`clean_chunk.py`), `deduplicate` (exact, and near with `near_index`), `write_shards`, then `write_manifest` and
`write_report` (`clean_report.py`). Options: `clean_config.py`; reading and atomic writes: `clean_io.py`.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from lmsmith.data.clean_chunk import map_chunks, process_chunk
from lmsmith.data.clean_config import FAULT_ENV, STEPS, CleanConfig, settings
from lmsmith.data.clean_io import (
    INPUT_SUFFIXES,
    atomic_write,
    chunked,
    iter_documents,
    list_inputs,
    read_jsonl,
    write_jsonl_gz,
)
from lmsmith.data.clean_report import Tally, heavy_filters, report_markdown, snippet
from lmsmith.data.dedup import BucketReplay, NearDedup, band_buckets, chunk_band_keys, cluster_sizes, optimal_bands
from lmsmith.errors import LmsmithError
from lmsmith.registry.store import sha256_file

# the pipeline's public names, wherever they live (the CLI and tests import them from here)
__all__ = ["FAULT_ENV", "INPUT_SUFFIXES", "STEPS", "CleanConfig", "Tally", "clean", "heavy_filters", "iter_documents",
           "list_inputs", "process_chunk", "report_markdown"]


# ----------------------------------------------------------------------------- before any work
def check_options(cfg: CleanConfig) -> None:
    if not cfg.output:
        raise LmsmithError("no output directory", "pass --output DIR")
    if Path(cfg.output).exists() and not Path(cfg.output).is_dir():
        raise LmsmithError(f"--output {cfg.output} is a file", "pass a directory (new, or one holding an unfinished run)")
    if not 0 < cfg.near_threshold <= 1 or not 0 <= cfg.langid_threshold <= 1:
        raise LmsmithError("thresholds must lie in (0, 1]", "check --near-threshold and --langid-threshold")
    if cfg.chunk_docs < 1 or cfg.workers < 1:
        raise LmsmithError("--chunk-docs and --workers must be at least 1")
    if cfg.langid:
        from lmsmith.data.langid import supported_languages

        unknown = sorted(set(cfg.lang) - set(supported_languages()))
        if unknown:
            raise LmsmithError(f"unknown language code(s) in --lang: {', '.join(unknown)}",
                               "use ISO 639-1 codes such as cs, pl, sl, sk, en")


def prepare_workdir(cfg: CleanConfig, out: Path) -> Path:
    """OUTPUT/_work, holding the settings it was started with: a re-run with the same ones resumes there."""
    work = out / "_work"
    current = json.dumps(settings(cfg), sort_keys=True)
    marker = work / "settings.json"
    if cfg.overwrite and out.exists():
        shutil.rmtree(work, ignore_errors=True)
        for f in list(out.glob("shard-*")) + [out / n for n in ("manifest.json", "report.json", "report.md")]:
            f.unlink(missing_ok=True)
    elif marker.exists() and marker.read_text() != current:
        raise LmsmithError(f"{out} holds an unfinished run with different options",
                           "re-run with the same options to resume, or add --overwrite to start over")
    elif (out / "manifest.json").exists() and not marker.exists():
        raise LmsmithError(f"{out} already holds a cleaned corpus", "choose another --output or add --overwrite")
    work.mkdir(parents=True, exist_ok=True)
    atomic_write(marker, current)
    return work


# ----------------------------------------------------------------------------- phase 1: per-document steps
@dataclass
class Chunks:
    """What phase 1 left: each chunk's result (by index) and the counts of the report."""

    results: dict[int, dict] = field(default_factory=dict)
    documents: int = 0
    resumed: int = 0
    processed: int = 0
    bad_lines: list[str] | None = None
    seconds: float = 0.0


def run_chunks(cfg: CleanConfig, files: list[Path], work: Path, task: Callable, t0: float) -> Chunks:
    """Read the inputs as a stream, cut into chunks, and run the per-document steps on each chunk in worker
    processes or Ray tasks; chunks finished by an earlier, interrupted run (a `.done` marker) are skipped."""
    run = Chunks(bad_lines=[] if cfg.skip_bad_lines else None)
    cfg_dict = cfg.model_dump()
    if cfg.executor == "ray":
        from lmsmith.data import ray_executor

        ray_executor.connect(cfg.ray_address, cfg.num_cpus)
    with task("clean", None) as bar:
        def collect(res: dict) -> None:
            run.results[res["index"]] = res
            bar(res["docs"], info=f"{sum(r['docs'] for r in run.results.values()) / max(time.time() - t0, 1e-9):.0f} docs/s")

        def todo() -> Iterator[tuple]:
            """The chunks still to process; finished ones (a `.done` marker) are collected, not redone."""
            docs_iter = iter_documents(files, cfg.text_field, cfg.txt_mode, run.bad_lines)
            for index, docs in enumerate(chunked(docs_iter, cfg.chunk_docs)):
                run.documents += len(docs)
                done = work / f"chunk-{index:05d}.done.json"
                if done.exists():
                    run.resumed += 1
                    collect(json.loads(done.read_text()))
                    continue
                run.processed += 1
                yield (index, docs, cfg_dict, str(work))

        kill_after = int(os.environ.get(FAULT_ENV, "").partition("driver-kill:")[2] or 0)
        try:
            for res in map_chunks(cfg, todo()):
                collect(res)
                if kill_after and len(run.results) >= kill_after:  # tests: the whole run dies mid-way
                    os.kill(os.getpid(), 9)
        except KeyboardInterrupt:
            raise LmsmithError(f"interrupted after {len(run.results)} finished chunk(s)",
                               "run the same command again to resume: finished chunks are kept and skipped") from None
    if not run.results:
        raise LmsmithError("the inputs hold no documents", "check the files and --txt-mode / --text-field")
    run.seconds = time.time() - t0
    return run


# ----------------------------------------------------------------------------- phase 2: exact and near dedup
def near_index(cfg: CleanConfig, work: Path, chunks: list[int]) -> NearDedup | BucketReplay | None:
    """The near-duplicate index: local MinHash LSH, or on Ray the LSH bands grouped over the whole corpus by one
    task per band (from the chunks' `.keys.npy`), replayed to keep and drop exactly what the local index would,
    holding only buckets two or more documents share."""
    if not cfg.near_dedup:
        return None
    if cfg.executor == "ray":
        from lmsmith.data import ray_executor

        bands, rows = optimal_bands(cfg.near_threshold, cfg.num_perm)
        buckets = list(ray_executor.ordered_map(band_buckets, ((str(work), chunks, b, bands, rows) for b in range(bands)),
                                                max_in_flight=ray_executor.cluster_cpus()))
        return BucketReplay(cfg.near_threshold, buckets, rows)
    return NearDedup(cfg.near_threshold, cfg.num_perm, sig_store=work / "kept_signatures.npy")


def deduplicate(cfg: CleanConfig, work: Path, chunks: list[int], near: NearDedup | BucketReplay | None, tally: Tally,
                task: Callable) -> dict[int, dict[int, tuple[str, int]]]:
    """Exact and near dedup in corpus order, in one process, from the chunks' hashes and signatures only (texts
    stay on disk). Returns the drops: chunk -> {row: (step, global index of the kept twin, -1 for exact)}."""
    seen: set[int] = set()
    drops: dict[int, dict[int, tuple[str, int]]] = {}
    gidx = 0
    with task("dedup", len(chunks)) as bar:
        for i in chunks:
            z = np.load(work / f"chunk-{i:05d}.npz")
            hashes, sigs, langs, chars = z["hashes"], z["sigs"], z["langs"], z["chars"]
            keys = (np.asarray(chunk_band_keys(work, i, near.bands, near.rows))
                    if isinstance(near, BucketReplay) else None)
            for row in range(len(hashes)):
                lang, n = str(langs[row]), int(chars[row])
                if cfg.exact_dedup:
                    h = int(hashes[row])
                    if h in seen:
                        drops.setdefault(i, {})[row] = ("exact_dedup", -1)
                        tally.record("exact_dedup", lang, n, None, "duplicate")
                        gidx += 1
                        continue
                    seen.add(h)
                    tally.record("exact_dedup", lang, n, n)
                if near is not None:
                    twin = (near.add(gidx, sigs[row], keys[:, row].tolist()) if keys is not None
                            else near.add(gidx, sigs[row]))
                    if twin is not None:
                        drops.setdefault(i, {})[row] = ("near_dedup", twin)
                        tally.record("near_dedup", lang, n, None, "near_duplicate")
                        gidx += 1
                        continue
                    tally.record("near_dedup", lang, n, n)
                gidx += 1
            bar(1)
    return drops


# ----------------------------------------------------------------------------- phase 3: output shards
@dataclass
class Shards:
    shards: list[dict[str, Any]] = field(default_factory=list)  # manifest entries
    languages: Counter = field(default_factory=Counter)
    documents: int = 0
    chars: int = 0


def write_shards(cfg: CleanConfig, out: Path, work: Path, chunks: list[int], drops: dict[int, dict[int, tuple[str, int]]],
                 tally: Tally, task: Callable) -> Shards:
    """The survivors as `shard-NNNNN.jsonl[.gz]` (deterministic bytes); on the way, the texts of the removed
    duplicates and their kept twins become the report's dedup examples."""
    for old in out.glob("shard-*"):
        old.unlink()
    want_twins = {t for d in drops.values() for step, t in d.values() if step == "near_dedup"}
    twin_text: dict[int, str] = {}
    dedup_examples: dict[str, list[dict]] = defaultdict(list)
    written = Shards()
    suffix = ".jsonl.gz" if cfg.compress else ".jsonl"
    gidx = 0
    with task("write", len(chunks)) as bar:
        for i in chunks:
            chunk_drops = drops.get(i, {})
            keep = []
            for row, rec in enumerate(read_jsonl(work / f"chunk-{i:05d}.jsonl.gz")):
                if gidx in want_twins:
                    twin_text[gidx] = rec["text"]
                if row in chunk_drops:
                    step, twin = chunk_drops[row]
                    ex = dedup_examples[step]
                    if len(ex) < cfg.examples:
                        ex.append({"id": rec["id"], "lang": rec["lang"], "text": snippet(rec["text"]),
                                   **({"twin": twin} if twin >= 0 else {})})
                else:
                    keep.append(rec)
                gidx += 1
            if keep:
                path = out / f"shard-{len(written.shards):05d}{suffix}"
                write_jsonl_gz(path, keep, cfg.compress)
                chars = sum(len(r["text"]) for r in keep)
                written.languages.update(r["lang"] for r in keep)
                written.shards.append({"path": path.name, "documents": len(keep), "chars": chars,
                                       "bytes": path.stat().st_size, "sha256": sha256_file(path)})
                written.documents += len(keep)
                written.chars += chars
            bar(1)
    for step, ex in dedup_examples.items():
        for e in ex:
            if "twin" in e:
                e["kept_twin"] = snippet(twin_text.get(e.pop("twin"), ""))
        tally.samples[f"{step}:{'duplicate' if step == 'exact_dedup' else 'near_duplicate'}"] = ex
    return written


# ----------------------------------------------------------------------------- phase 4: manifest and report
def write_manifest(cfg: CleanConfig, out: Path, files: list[Path], written: Shards) -> None:
    manifest = {"format": "jsonl.gz" if cfg.compress else "jsonl", "text_field": "text", "documents": written.documents,
                "chars": written.chars, "languages": dict(written.languages), "shards": written.shards,
                "inputs": [str(f) for f in files], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "config": settings(cfg)}
    atomic_write(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))


def write_report(cfg: CleanConfig, out: Path, run: Chunks, written: Shards, near: NearDedup | BucketReplay | None,
                 tally: Tally, elapsed: float) -> dict:
    report = {
        "documents_in": run.documents, "documents_out": written.documents, "chars_out": written.chars,
        "chunks": len(run.results), "chunks_resumed": run.resumed, "chunks_processed": run.processed,
        "seconds": round(elapsed, 2), "seconds_per_document_steps": round(run.seconds, 2),
        "peak_worker_rss_mb": max((r.get("worker_rss_mb", 0) for r in run.results.values()), default=0),
        "executor": cfg.executor,
        "docs_per_second": round(run.documents / max(elapsed, 1e-9), 1), "workers": cfg.workers,
        "near_dedup": ({**cluster_sizes(near.clusters), "bands": near.bands, "rows": near.rows,
                        "threshold": cfg.near_threshold} if near is not None else None),
        "bad_lines": len(run.bad_lines or []), "bad_line_examples": (run.bad_lines or [])[:10],
        **tally.to_dict(),
    }
    report["warnings"] = heavy_filters(report)
    atomic_write(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(report_markdown(report))
    return report


# ----------------------------------------------------------------------------- the pipeline
def clean(cfg: CleanConfig) -> dict:
    """Run the pipeline; returns the report dict (also written to OUTPUT/report.json and report.md)."""
    from lmsmith.progress import console
    from lmsmith.progress import task as progress_task

    def task(description: str, total: int | None):
        return progress_task(description, total) if cfg.progress else contextlib.nullcontext(lambda *a, **k: None)

    check_options(cfg)
    files = list_inputs(cfg.inputs)
    out = Path(cfg.output)
    work = prepare_workdir(cfg, out)
    t0 = time.time()
    run = run_chunks(cfg, files, work, task, t0)
    chunks = sorted(run.results)
    tally = Tally(cfg.examples)
    for i in chunks:
        tally.merge(run.results[i]["tally"])
    near = near_index(cfg, work, chunks)
    drops = deduplicate(cfg, work, chunks, near, tally, task)
    written = write_shards(cfg, out, work, chunks, drops, tally, task)
    elapsed = time.time() - t0
    write_manifest(cfg, out, files, written)
    report = write_report(cfg, out, run, written, near, tally, elapsed)
    if not cfg.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    console.print(f"kept {written.documents:,} of {run.documents:,} documents in {len(written.shards)} shard(s) -> {out} "
                  f"({elapsed:.1f} s, {report['docs_per_second']:.0f} docs/s)")
    return report
