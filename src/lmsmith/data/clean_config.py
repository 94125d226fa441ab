"""The options of `lmsmith data clean` (`CleanConfig`), and which of them define the result (`settings`):
a resumed run must match those, and the manifest records them."""

from __future__ import annotations

import os
from typing import Literal

from pydantic import Field

from lmsmith.data.quality import QualityConfig

STEPS = ("normalize", "langid", "quality", "pii", "exact_dedup", "near_dedup")
# Options that do not change the result: a resumed run may change them.
VOLATILE = {"inputs", "output", "workers", "progress", "overwrite", "keep_work", "examples", "executor",
            "ray_address", "num_cpus"}
# Test hooks: "worker-exit:CHUNK" kills the worker on its first try of CHUNK; "driver-kill:N" kills the whole
# run once N chunks are finished
FAULT_ENV = "LMSMITH_CLEAN_FAULT"


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



def settings(cfg: CleanConfig) -> dict:
    """The options that define the result."""
    return cfg.model_dump(exclude=VOLATILE)
