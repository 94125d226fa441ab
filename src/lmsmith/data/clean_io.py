"""Files of `lmsmith data clean`: the input documents read as a stream (JSONL, text, gzipped or not) and cut
into chunks, and the atomic, deterministic writes of its work and output files."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any, Iterator

from lmsmith.errors import LmsmithError

INPUT_SUFFIXES = (".jsonl", ".jsonl.gz", ".json", ".txt", ".txt.gz")


# ----------------------------------------------------------------------------- reading
def open_text(path: Path) -> io.TextIOBase:
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


def iter_documents(files: list[Path], text_field: str = "text", txt_mode: str = "blank-line",
                   bad_lines: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Yield {"id", "text", "lang"?} records one at a time from JSONL and text files. With `bad_lines`
    (a list), broken JSONL lines are recorded there as 'file:line' and skipped instead of raising."""
    for path in files:
        name = path.name
        with open_text(path) as f:
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


def chunked(docs: Iterator[dict], size: int) -> Iterator[list[dict]]:
    buf: list[dict] = []
    for d in docs:
        buf.append(d)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def read_jsonl(path: Path) -> Iterator[dict]:
    with open_text(path) as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


# ----------------------------------------------------------------------------- writing
def write_jsonl_gz(path: Path, recs: list[dict], compress: bool = True) -> None:
    """Atomic, and deterministic: no timestamp or name in the gzip header, so the same records give the
    same bytes (and sha256) on every run and executor."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as raw:
        binary = gzip.GzipFile(filename="", mode="wb", compresslevel=3, fileobj=raw, mtime=0) if compress else raw
        with io.TextIOWrapper(binary, encoding="utf-8") as f:
            for r in recs:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
