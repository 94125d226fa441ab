"""`lmsmith data clean`: a streaming, multi-process, resumable corpus cleaning pipeline.

Steps, in order (each can be switched off): normalize -> langid -> quality -> pii -> exact dedup ->
near dedup. The input is read as a stream and cut into chunks of `chunk_docs` documents; worker
processes run the per-document steps on a chunk and write its survivors, their hashes and MinHash
signatures into `OUTPUT/_work/` (the chunk's `.done.json` is written last and marks it finished, so
a re-run after an interruption skips finished chunks). Deduplication then streams the hashes and
signatures in corpus order in one process (only hashes and LSH buckets in memory, see `dedup`), and
the survivors are written as `shard-NNNNN.jsonl.gz` with `manifest.json`, `report.json` and `report.md`.

Memory is bounded by (workers x 2) chunks in flight plus the dedup index: texts never accumulate.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import multiprocessing as mp
import os
import shutil
import time
from collections import Counter, defaultdict, deque
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
from pydantic import Field

from lmsmith.data.dedup import (
    BucketReplay,
    MinHasher,
    NearDedup,
    band_buckets,
    band_keys,
    chunk_band_keys,
    cluster_sizes,
    optimal_bands,
)
from lmsmith.data.normalize import normalize_text, text_hash
from lmsmith.data.quality import QualityConfig, quality_reason
from lmsmith.errors import LmsmithError
from lmsmith.registry.store import sha256_file as _sha256

STEPS = ("normalize", "langid", "quality", "pii", "exact_dedup", "near_dedup")
INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".txt", ".txt.gz")
# Options that do not change the result: a resumed run may change them.
_VOLATILE = {"inputs", "output", "workers", "progress", "overwrite", "keep_work", "examples", "executor",
             "ray_address", "num_cpus"}


class CleanConfig(QualityConfig):
    inputs: list[str] = Field(default_factory=list, description="input files or directories (.jsonl[.gz] with a "
                              "text field, .txt[.gz])")
    output: str = Field("", description="output directory for shards, manifest and report")
    lang: list[str] = Field(default_factory=list, description="languages to keep, comma-separated ISO codes "
                            "(empty: keep every language)")
    workers: int = Field(max(1, min(os.cpu_count() or 1, 8)), description="worker processes")
    chunk_docs: int = Field(2000, description="documents per work chunk and output shard (unit of resume)")
    text_field: str = Field("text", description="JSONL field holding the text")
    skip_bad_lines: bool = Field(False, description="skip JSONL lines that are not JSON objects with the text field "
                                 "(counted in the report) instead of stopping at the first one")
    executor: Literal["local", "ray"] = Field("local", description="run the per-chunk steps in local worker "
                                              "processes, or as Ray tasks (same output)")
    ray_address: str | None = Field(None, description="Ray cluster to join: auto, ray://HOST:10001 or HOST:6379 "
                                    "(default: start a local one)")
    num_cpus: int | None = Field(None, ge=1, description="CPUs of the local Ray cluster (default: all)")
    txt_mode: Literal["blank-line", "line", "file"] = Field(
        "blank-line", description="how a .txt file splits into documents")
    normalize: bool = Field(True, description="Unicode normalization and whitespace fixes")
    unicode_form: Literal["NFC", "NFKC", ""] = Field("NFC", description="Unicode normal form ('' to skip)")
    langid: bool = Field(True, description="language identification (py3langid)")
    langid_threshold: float = Field(0.5, description="smallest language probability to keep a document")
    langid_candidates: list[str] = Field(default_factory=list, description="restrict language ID to these "
                                         "languages (e.g. cs,sk,en)")
    quality: bool = Field(True, description="Gopher/FineWeb quality heuristics")
    pii: bool = Field(True, description="replace e-mails, phone numbers and IP addresses")
    pii_kinds: list[str] = Field(default_factory=lambda: ["email", "phone", "ip"], description="PII kinds")
    exact_dedup: bool = Field(True, description="drop documents whose normalized text repeats")
    near_dedup: bool = Field(True, description="drop near-duplicates (MinHash LSH)")
    near_threshold: float = Field(0.8, description="estimated Jaccard similarity that counts as a duplicate")
    shingle_size: int = Field(5, description="word n-gram size of MinHash shingles")
    num_perm: int = Field(128, description="MinHash permutations")
    compress: bool = Field(True, description="gzip the output shards")
    examples: int = Field(3, description="examples of removed documents per filter in the report")
    overwrite: bool = Field(False, description="start over even if OUTPUT holds a run with other options")
    keep_work: bool = Field(False, description="keep OUTPUT/_work after success (else it is deleted)")
    progress: bool = Field(True, description="show a progress bar")


# ----------------------------------------------------------------------------- reading


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def list_inputs(inputs: list[str]) -> list[Path]:
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.rglob("*") if f.is_file() and f.name.endswith(INPUT_SUFFIXES))
            if not found:
                raise LmsmithError(f"no input files in {p}", f"expected files ending in {', '.join(INPUT_SUFFIXES)}")
            files += found
        elif p.is_file():
            if not p.name.endswith(INPUT_SUFFIXES):
                raise LmsmithError(f"unsupported input file {p}", f"use {', '.join(INPUT_SUFFIXES)}")
            files.append(p)
        else:
            raise LmsmithError(f"input not found: {p}", "check the path")
    if not files:
        raise LmsmithError("no inputs given", "pass files or directories: lmsmith data clean FILE... --output DIR")
    return files


# the option to loosen when one reason removes most of a corpus
REASON_FLAGS = {"too_few_words": "--min-words", "too_many_words": "--max-words", "mean_word_length":
                "--min-mean-word-length/--max-mean-word-length", "stop_words": "--min-stop-words",
                "alpha_words": "--min-alpha-words", "terminal_punct_lines": "--min-terminal-punct-lines",
                "dup_lines": "--max-dup-line-fraction", "dup_line_chars": "--max-dup-line-char-fraction",
                "symbol_word_ratio": "--max-symbol-word-ratio", "bullet_lines": "--max-bullet-lines",
                "ellipsis_lines": "--max-ellipsis-lines"}


def heavy_filters(report: dict[str, Any], share: float = 0.5) -> list[str]:
    """One line per step that removed more than `share` of the documents in, naming its main reason."""
    out = []
    n = max(report["documents_in"], 1)
    for step, c in report["steps"].items():
        removed = c.get("docs_in", 0) - c.get("docs_out", 0)
        if removed / n > share:
            reasons = report["reasons"].get(step, {})
            top, count = max(reasons.items(), key=lambda kv: kv[1]) if reasons else (step, removed)
            flag = REASON_FLAGS.get(top)
            out.append(f"{step} removed {removed / n:.0%} of the documents (mostly '{top}': {count:,})"
                       + (f"; if your texts are short or unusual, loosen {flag}" if flag else "")
                       + "; examples in report.md")
    return out


def iter_documents(files: list[Path], text_field: str = "text", txt_mode: str = "blank-line",
                   bad_lines: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield {"id", "text", "lang"?} records one at a time from JSONL and text files. With `bad_lines`
    (a list), broken JSONL lines are recorded there as 'file:line' and skipped instead of raising."""
    for path in files:
        name = path.name
        with _open_text(path) as f:
            if ".jsonl" in name or name.endswith(".json"):
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        rec = json.loads(line)
                    except json.JSONDecodeError as e:
                        if bad_lines is not None:
                            bad_lines.append(f"{path}:{lineno}")
                            continue
                        raise LmsmithError(f"{path}:{lineno}: not valid JSON ({e.msg})",
                                           "each line must be one JSON object, or pass --skip-bad-lines") from None
                    if not isinstance(rec, dict) or not isinstance(rec.get(text_field), str):
                        if bad_lines is not None:
                            bad_lines.append(f"{path}:{lineno}")
                            continue
                        raise LmsmithError(f"{path}:{lineno}: no string field '{text_field}'",
                                           "set --text-field to the field that holds the text, or pass --skip-bad-lines")
                    yield {"id": str(rec.get("id", f"{name}:{lineno}")), "text": rec[text_field],
                           **({"lang": rec["lang"]} if isinstance(rec.get("lang"), str) else {})}
            elif txt_mode == "file":
                yield {"id": name, "text": f.read()}
            elif txt_mode == "line":
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        yield {"id": f"{name}:{lineno}", "text": line.rstrip("\n")}
            else:
                buf: list[str] = []
                start = 1
                for lineno, line in enumerate(f, 1):
                    if line.strip():
                        if not buf:
                            start = lineno
                        buf.append(line)
                    elif buf:
                        yield {"id": f"{name}:{start}", "text": "".join(buf)}
                        buf = []
                if buf:
                    yield {"id": f"{name}:{start}", "text": "".join(buf)}


def _chunks(docs: Iterator[dict], size: int) -> Iterator[list[dict]]:
    buf: list[dict] = []
    for d in docs:
        buf.append(d)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


# ----------------------------------------------------------------------------- accounting


class Tally:
    """Documents and characters in/out per step and per language, plus removal reasons and examples."""

    def __init__(self, examples: int = 3):
        self.examples = examples
        self.steps: dict[str, Counter] = defaultdict(Counter)
        self.langs: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        self.reasons: dict[str, Counter] = defaultdict(Counter)
        self.samples: dict[str, list[dict]] = defaultdict(list)
        self.pii: Counter = Counter()

    def record(self, step: str, lang: str, chars_in: int, chars_out: int | None, reason: str | None = None,
               doc_id: str = "", text: str = "", detail: str = "") -> None:
        kept = chars_out is not None
        for c in (self.steps[step], self.langs[lang][step]):
            c["docs_in"] += 1
            c["chars_in"] += chars_in
            c["docs_out"] += kept
            c["chars_out"] += chars_out or 0
        if not kept:
            reason = reason or step
            self.reasons[step][reason] += 1
            key = f"{step}:{reason}"
            if len(self.samples[key]) < self.examples and text:
                self.samples[key].append({"id": doc_id, "lang": lang, "detail": detail, "text": _snippet(text)})

    def to_dict(self) -> dict:
        return {"steps": {k: dict(v) for k, v in self.steps.items()},
                "langs": {lang: {s: dict(c) for s, c in v.items()} for lang, v in self.langs.items()},
                "reasons": {k: dict(v) for k, v in self.reasons.items()},
                "samples": dict(self.samples), "pii": dict(self.pii)}

    def merge(self, d: dict) -> None:
        for step, c in d["steps"].items():
            self.steps[step].update(c)
        for lang, steps in d["langs"].items():
            for step, c in steps.items():
                self.langs[lang][step].update(c)
        for step, c in d["reasons"].items():
            self.reasons[step].update(c)
        for key, items in d["samples"].items():
            room = self.examples - len(self.samples[key])
            self.samples[key].extend(items[:max(room, 0)])
        self.pii.update(d["pii"])


def _snippet(text: str, n: int = 300) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= n else text[:n] + " …"


# ----------------------------------------------------------------------------- per-chunk work (workers)


def _settings(cfg: CleanConfig) -> dict:
    return cfg.model_dump(exclude=_VOLATILE)


def process_chunk(index: int, docs: list[dict], cfg: CleanConfig, work: Path) -> dict:
    """Run the per-document steps on one chunk; write survivors, hashes and signatures; return its tally."""
    from lmsmith.data.langid import detect
    from lmsmith.data.pii import scrub_pii

    tally = Tally(cfg.examples)
    hasher = MinHasher(cfg.num_perm, cfg.shingle_size)
    keep_langs = set(cfg.lang)
    out_recs: list[dict] = []
    hashes: list[int] = []
    sigs: list[np.ndarray] = []
    for doc in docs:
        raw = doc["text"]
        text = normalize_text(raw, cfg.unicode_form) if cfg.normalize else raw
        lang, score = doc.get("lang", "und"), 1.0
        if cfg.langid:
            lang, score = detect(text, tuple(cfg.langid_candidates))
        if not text.strip():
            tally.record("normalize", lang, len(raw), None, "empty", doc["id"], raw or "(empty)")
            continue
        tally.record("normalize", lang, len(raw), len(text))
        if cfg.langid:
            if score < cfg.langid_threshold:
                tally.record("langid", lang, len(text), None, "low_confidence", doc["id"], text, f"{lang} p={score:.2f}")
                continue
            if keep_langs and lang not in keep_langs:
                tally.record("langid", lang, len(text), None, "other_language", doc["id"], text, f"{lang} p={score:.2f}")
                continue
            tally.record("langid", lang, len(text), len(text))
        elif keep_langs and lang not in keep_langs:
            tally.record("langid", lang, len(text), None, "other_language", doc["id"], text, f"{lang} (given)")
            continue
        if cfg.quality:
            reason = quality_reason(text, lang, cfg)
            if reason:
                tally.record("quality", lang, len(text), None, reason, doc["id"], text)
                continue
            tally.record("quality", lang, len(text), len(text))
        if cfg.pii:
            before = len(text)
            text, counts = scrub_pii(text, tuple(cfg.pii_kinds))
            tally.pii.update(counts)
            tally.record("pii", lang, before, len(text))
        rec = {"id": doc["id"], "text": text, "lang": lang}
        if cfg.langid:
            rec["lang_score"] = round(score, 4)
        out_recs.append(rec)
        hashes.append(text_hash(text) if cfg.exact_dedup else 0)
        if cfg.near_dedup:
            sigs.append(hasher.signature(text))
    stem = work / f"chunk-{index:05d}"
    _write_jsonl_gz(stem.with_suffix(".jsonl.gz"), out_recs)
    np.savez(str(stem) + ".tmp.npz", hashes=np.array(hashes, dtype=np.uint64),
             sigs=np.stack(sigs) if sigs else np.zeros((0, cfg.num_perm), dtype=np.uint32),
             langs=np.array([r["lang"] for r in out_recs], dtype=object).astype(str),
             chars=np.array([len(r["text"]) for r in out_recs], dtype=np.int64))
    os.replace(str(stem) + ".tmp.npz", str(stem) + ".npz")
    if cfg.near_dedup:  # LSH band keys, column per band, for the corpus-wide band grouping on Ray
        bands, rows = optimal_bands(cfg.near_threshold, cfg.num_perm)
        keys = band_keys(np.stack(sigs), bands, rows).T if sigs else np.zeros((bands, 0), dtype=np.uint64)
        np.save(str(stem) + ".keys.tmp.npy", np.ascontiguousarray(keys))
        os.replace(str(stem) + ".keys.tmp.npy", str(stem) + ".keys.npy")
    import resource

    result = {"index": index, "docs": len(docs), "kept": len(out_recs), "tally": tally.to_dict(),
              "worker_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}
    _atomic_write(stem.with_suffix(".done.json"), json.dumps(result))
    return result


FAULT_ENV = "LMSMITH_CLEAN_FAULT"  # tests: "worker-exit:CHUNK" kills the worker on its first try of CHUNK


def _worker(args: tuple) -> dict:
    index, docs, cfg_dict, work = args
    fault = os.environ.get(FAULT_ENV, "")
    if fault == f"worker-exit:{index}":
        marker = Path(work) / f"fault-{index}"
        if not marker.exists():
            marker.touch()
            os._exit(1)  # a crashed worker: the executor must retry this chunk
    return process_chunk(index, docs, CleanConfig.model_validate(cfg_dict), Path(work))


def _map_chunks(cfg: CleanConfig, chunks: Iterator[tuple]) -> Iterator[dict]:
    """Run `_worker` over the chunks on the configured executor, results in chunk order, with at most
    two chunks per worker in flight (memory stays bounded)."""
    if cfg.executor == "ray":
        from lmsmith.data import ray_executor

        yield from ray_executor.ordered_map(_worker, ((a,) for a in chunks), max_in_flight=2 * ray_executor.cluster_cpus())
        return
    if cfg.workers == 1:
        for args in chunks:
            yield _worker(args)
        return
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    pool = ctx.Pool(cfg.workers)
    pending: deque = deque()
    try:
        for args in chunks:
            pending.append(pool.apply_async(_worker, (args,)))
            while len(pending) >= 2 * cfg.workers:
                yield pending.popleft().get()
        while pending:
            yield pending.popleft().get()
    finally:
        pool.terminate()
        pool.join()


def _write_jsonl_gz(path: Path, recs: list[dict], compress: bool = True) -> None:
    """Atomic, and deterministic: no timestamp or name in the gzip header, so the same records give the
    same bytes (and sha256) on every run and executor."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        binary = gzip.GzipFile(filename="", mode="wb", compresslevel=3, fileobj=raw, mtime=0) if compress else raw
        with io.TextIOWrapper(binary, encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _read_jsonl(path: Path) -> Iterator[dict]:
    with _open_text(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# ----------------------------------------------------------------------------- orchestration


def _prepare_workdir(cfg: CleanConfig, out: Path) -> Path:
    work = out / "_work"
    settings = json.dumps(_settings(cfg), sort_keys=True)
    marker = work / "settings.json"
    if cfg.overwrite and out.exists():
        shutil.rmtree(work, ignore_errors=True)
        for f in list(out.glob("shard-*")) + [out / n for n in ("manifest.json", "report.json", "report.md")]:
            f.unlink(missing_ok=True)
    elif marker.exists() and marker.read_text() != settings:
        raise LmsmithError(f"{out} holds an unfinished run with different options",
                           "re-run with the same options to resume, or add --overwrite to start over")
    elif (out / "manifest.json").exists() and not marker.exists():
        raise LmsmithError(f"{out} already holds a cleaned corpus", "choose another --output or add --overwrite")
    work.mkdir(parents=True, exist_ok=True)
    _atomic_write(marker, settings)
    return work


def clean(cfg: CleanConfig) -> dict:
    """Run the pipeline; returns the report dict (also written to OUTPUT/report.json and report.md)."""
    from lmsmith.progress import console
    from lmsmith.progress import task as progress_task

    def task(description: str, total: int | None):
        return progress_task(description, total) if cfg.progress else contextlib.nullcontext(lambda *a, **k: None)

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
    files = list_inputs(cfg.inputs)
    out = Path(cfg.output)
    work = _prepare_workdir(cfg, out)
    t0 = time.time()

    # Phase 1: per-document steps, chunk by chunk, in worker processes (finished chunks are skipped).
    results: dict[int, dict] = {}
    resumed = processed = n_docs = 0
    cfg_dict = cfg.model_dump()
    bad_lines: list[str] | None = [] if cfg.skip_bad_lines else None
    if cfg.executor == "ray":
        from lmsmith.data import ray_executor

        ray_executor.connect(cfg.ray_address, cfg.num_cpus)
    with task("clean", None) as bar:
        def collect(res: dict) -> None:
            results[res["index"]] = res
            bar(res["docs"], info=f"{sum(r['docs'] for r in results.values()) / max(time.time() - t0, 1e-9):.0f} docs/s")

        def todo() -> Iterator[tuple]:
            """The chunks still to process; finished ones (a `.done` marker) are collected, not redone."""
            nonlocal n_docs, resumed, processed
            docs_iter = iter_documents(files, cfg.text_field, cfg.txt_mode, bad_lines)
            for index, docs in enumerate(_chunks(docs_iter, cfg.chunk_docs)):
                n_docs += len(docs)
                done = work / f"chunk-{index:05d}.done.json"
                if done.exists():
                    resumed += 1
                    collect(json.loads(done.read_text()))
                    continue
                processed += 1
                yield (index, docs, cfg_dict, str(work))

        kill_after = int(os.environ.get(FAULT_ENV, "").partition("driver-kill:")[2] or 0)
        try:
            for res in _map_chunks(cfg, todo()):
                collect(res)
                if kill_after and len(results) >= kill_after:  # tests: the whole run dies mid-way
                    os.kill(os.getpid(), 9)
        except KeyboardInterrupt:
            raise LmsmithError(f"interrupted after {len(results)} finished chunk(s)",
                               "run the same command again to resume: finished chunks are kept and skipped") from None
    if not results:
        raise LmsmithError("the inputs hold no documents", "check the files and --txt-mode / --text-field")
    t_local = time.time() - t0

    # Phase 2: exact and near dedup in corpus order, one process, only hashes/signatures in memory.
    tally = Tally(cfg.examples)
    for i in sorted(results):
        tally.merge(results[i]["tally"])
    seen: set[int] = set()
    near: NearDedup | BucketReplay | None = None
    if cfg.near_dedup and cfg.executor == "ray":
        # LSH bands grouped over the whole corpus by one Ray task per band; the replay below keeps and drops
        # exactly what the local index would, holding only buckets two or more documents share
        from lmsmith.data import ray_executor

        bands, rows = optimal_bands(cfg.near_threshold, cfg.num_perm)
        chunks = sorted(results)
        buckets = list(ray_executor.ordered_map(band_buckets, ((str(work), chunks, b, bands, rows) for b in range(bands)),
                                                max_in_flight=ray_executor.cluster_cpus()))
        near = BucketReplay(cfg.near_threshold, buckets, rows)
    elif cfg.near_dedup:
        near = NearDedup(cfg.near_threshold, cfg.num_perm, sig_store=work / "kept_signatures.npy")
    drops: dict[int, dict[int, tuple[str, int]]] = {}  # chunk -> {row: (step, global index of the kept twin)}
    gidx = 0
    with task("dedup", len(results)) as bar:
        for i in sorted(results):
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

    # Phase 3: write the survivors as output shards; pick up texts for the dedup examples on the way.
    for old in out.glob("shard-*"):
        old.unlink()
    want_twins = {t for d in drops.values() for step, t in d.values() if step == "near_dedup"}
    twin_text: dict[int, str] = {}
    dedup_examples: dict[str, list[dict]] = defaultdict(list)
    shards, languages = [], Counter()
    total_docs = total_chars = 0
    suffix = ".jsonl.gz" if cfg.compress else ".jsonl"
    gidx = 0
    with task("write", len(results)) as bar:
        for i in sorted(results):
            chunk_drops = drops.get(i, {})
            keep = []
            for row, rec in enumerate(_read_jsonl(work / f"chunk-{i:05d}.jsonl.gz")):
                if gidx in want_twins:
                    twin_text[gidx] = rec["text"]
                if row in chunk_drops:
                    step, twin = chunk_drops[row]
                    ex = dedup_examples[step]
                    if len(ex) < cfg.examples:
                        ex.append({"id": rec["id"], "lang": rec["lang"], "text": _snippet(rec["text"]),
                                   **({"twin": twin} if twin >= 0 else {})})
                else:
                    keep.append(rec)
                gidx += 1
            if keep:
                path = out / f"shard-{len(shards):05d}{suffix}"
                _write_jsonl_gz(path, keep, cfg.compress)
                chars = sum(len(r["text"]) for r in keep)
                languages.update(r["lang"] for r in keep)
                shards.append({"path": path.name, "documents": len(keep), "chars": chars,
                               "bytes": path.stat().st_size, "sha256": _sha256(path)})
                total_docs += len(keep)
                total_chars += chars
            bar(1)
    for step, ex in dedup_examples.items():
        for e in ex:
            if "twin" in e:
                e["kept_twin"] = _snippet(twin_text.get(e.pop("twin"), ""))
        tally.samples[f"{step}:{'duplicate' if step == 'exact_dedup' else 'near_duplicate'}"] = ex

    elapsed = time.time() - t0
    manifest = {"format": "jsonl.gz" if cfg.compress else "jsonl", "text_field": "text", "documents": total_docs,
                "chars": total_chars, "languages": dict(languages), "shards": shards,
                "inputs": [str(f) for f in files], "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "config": _settings(cfg)}
    _atomic_write(out / "manifest.json", json.dumps(manifest, indent=2, ensure_ascii=False))
    report = {
        "documents_in": n_docs, "documents_out": total_docs, "chars_out": total_chars,
        "chunks": len(results), "chunks_resumed": resumed, "chunks_processed": processed,
        "seconds": round(elapsed, 2), "seconds_per_document_steps": round(t_local, 2),
        "peak_worker_rss_mb": max((r.get("worker_rss_mb", 0) for r in results.values()), default=0),
        "executor": cfg.executor,
        "docs_per_second": round(n_docs / max(elapsed, 1e-9), 1), "workers": cfg.workers,
        "near_dedup": ({**cluster_sizes(near.clusters), "bands": near.bands, "rows": near.rows,
                        "threshold": cfg.near_threshold} if near is not None else None),
        "bad_lines": len(bad_lines or []), "bad_line_examples": (bad_lines or [])[:10],
        **tally.to_dict(),
    }
    report["warnings"] = heavy_filters(report)
    _atomic_write(out / "report.json", json.dumps(report, indent=2, ensure_ascii=False))
    (out / "report.md").write_text(report_markdown(report))
    if not cfg.keep_work:
        shutil.rmtree(work, ignore_errors=True)
    console.print(f"kept {total_docs:,} of {n_docs:,} documents in {len(shards)} shard(s) -> {out} "
                  f"({elapsed:.1f} s, {report['docs_per_second']:.0f} docs/s)")
    return report



def report_markdown(r: dict) -> str:
    lines = ["# Cleaning report", "",
             f"{r['documents_in']:,} documents in, {r['documents_out']:,} out, {r['seconds']} s "
             f"({r['docs_per_second']} docs/s, {r['workers']} workers; {r['chunks_resumed']} of {r['chunks']} "
             "chunks resumed).", "", "## Steps", "",
             "| step | docs in | docs out | removed | chars in | chars out |", "|---|---:|---:|---:|---:|---:|"]
    for step in STEPS:
        c = r["steps"].get(step)
        if c:
            lines.append(f"| {step} | {c.get('docs_in', 0):,} | {c.get('docs_out', 0):,} | "
                         f"{c.get('docs_in', 0) - c.get('docs_out', 0):,} | {c.get('chars_in', 0):,} | "
                         f"{c.get('chars_out', 0):,} |")
    lines += ["", "## Per language (documents in -> out per step)", "",
              "| lang | " + " | ".join(s for s in STEPS) + " |", "|---|" + "---:|" * len(STEPS)]
    for lang, steps in sorted(r["langs"].items(), key=lambda kv: -kv[1].get("normalize", {}).get("docs_in", 0)):
        cells = [f"{steps[s].get('docs_in', 0)}->{steps[s].get('docs_out', 0)}" if s in steps else "" for s in STEPS]
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines += ["", "## Removal reasons", ""]
    for step, reasons in r["reasons"].items():
        lines.append(f"- **{step}**: " + ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    if r.get("pii"):
        lines += ["", "## PII replaced", "", ", ".join(f"{k}: {v:,}" for k, v in r["pii"].items())]
    if r.get("near_dedup"):
        nd = r["near_dedup"]
        lines += ["", "## Near-duplicate clusters", "",
                  f"{nd['clusters']:,} clusters, {nd['removed']:,} documents removed, largest cluster "
                  f"{nd['largest']} (threshold {nd['threshold']}, {nd['bands']} bands x {nd['rows']} rows)."]
    lines += ["", "## Examples of removed documents", ""]
    for key, items in r["samples"].items():
        lines.append(f"### {key}")
        for e in items:
            detail = f" ({e['detail']})" if e.get("detail") else ""
            lines.append(f"- `{e['id']}` [{e['lang']}]{detail}: {e['text']}")
            if e.get("kept_twin"):
                lines.append(f"  - kept instead: {e['kept_twin']}")
        lines.append("")
    return "\n".join(lines) + "\n"
