"""The model registry: versioned, content-addressed, lineage-tracked HF model directories.

Layout under $LMSMITH_HOME:
    store/sha256/ab/abcd…              blobs (read-only), one per tensor or per non-weight file
    registry/models/NAME/V/            a version: hard links to blobs forming a plain HF model directory
    registry/models/NAME/V/lmsmith.json  its metadata (hashes, lineage, tags, metrics)
    registry/models/NAME/aliases.json  alias -> version
    registry/locks/                    flock files

Weights are split into one safetensors file per tensor plus `model.safetensors.index.json`, so two
versions that share tensors share blobs (a LoRA-merged or partly fine-tuned model, a re-import), while
`AutoModelForCausalLM.from_pretrained(version_dir)` still loads the directory as it is.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import mmap
import os
import re
import shutil
import struct
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

from pydantic import BaseModel, Field

from lmsmith.errors import IntegrityError, LmsmithError, did_you_mean
from lmsmith.home import lmsmith_home
from lmsmith.registry.store import LocalBlobStore, file_digest

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}\Z")  # \Z: `$` would accept a trailing newline
ALIAS_RE = re.compile(r"^[A-Za-z][A-Za-z0-9._-]{0,63}\Z")
VERSION_RE = re.compile(r"[0-9]{1,9}")  # ASCII digits only: '²'.isdigit() is True but int('²') fails
META_FILE = "lmsmith.json"
INDEX_FILE = "model.safetensors.index.json"
SAFE_TENSOR_RE = re.compile(r"[A-Za-z0-9._-]{1,200}")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")
# Files a model directory may carry that we never store (caches, VCS, the index we rebuild).
SKIP_NAMES = {".git", ".gitattributes", "__pycache__", ".cache", META_FILE}


class DataRef(BaseModel):
    path: str
    sha256: str | None = None
    size: int | None = None


class Lineage(BaseModel):
    parent: str | None = Field(None, description="ref of the version this one was derived from")
    stage: str = Field("import", description="import | pretrain | sft | dpo | reward | extend | compress | …")
    command: str | None = None
    data: list[DataRef] = Field(default_factory=list)
    run_id: str | None = None
    config: dict[str, Any] = Field(default_factory=dict)
    source: str | None = Field(None, description="where an imported model came from")


class FileEntry(BaseModel):
    sha256: str
    size: int


class ModelVersion(BaseModel):
    name: str
    version: int
    kind: str = "model"  # "model", "adapter" (PEFT; `base` names its base model) or "index" (lmsmith.rag; `base` names its embedder)
    base: str | None = None
    created: str
    files: dict[str, FileEntry]
    lineage: Lineage = Field(default_factory=Lineage)
    tags: dict[str, str] = Field(default_factory=dict)
    metrics: dict[str, Any] = Field(default_factory=dict)
    evals: list[dict[str, Any]] = Field(default_factory=list)  # every eval run: date, settings, scores, run dir
    aliases: list[str] = Field(default_factory=list)
    stored_bytes: int = 0  # bytes this version added to the store when registered
    path: str = ""  # the materialized directory (filled in on read)

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files.values())

    @property
    def dir(self) -> Path:
        return Path(self.path)


class PathModel(BaseModel):
    """A model directory on disk, not in the registry (refs may be plain paths)."""

    path: str
    kind: str = "model"
    base: str | None = None

    @property
    def ref(self) -> str:
        return self.path

    @property
    def dir(self) -> Path:
        return Path(self.path)


def check_links(src: Path) -> None:
    """Refuse symbolic links that lead out of a directory being imported: a crafted model folder must not
    pull /etc/passwd or a neighbouring folder into the registry (and out again on export). Links to files
    inside the folder are fine, as are links of a Hugging Face cache snapshot into its `blobs/`."""
    root = src.resolve()
    allowed = [root]
    if src.parent.name == "snapshots":  # ~/.cache/huggingface/hub/models--x--y/snapshots/REV -> ../../blobs/
        allowed.append((src.parent.parent / "blobs").resolve())
    bad: list[str] = []
    for dirpath, dirnames, filenames in os.walk(src):  # does not descend into linked directories
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            if not p.is_symlink():
                continue
            target = p.resolve()
            rel = p.relative_to(src).as_posix()
            if target.is_dir():
                bad.append(f"{rel} (a link to the directory {target})")
            elif not any(a == target or a in target.parents for a in allowed):
                bad.append(f"{rel} -> {target}")
    if bad:
        more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
        raise LmsmithError(f"{src} has symbolic links that lead outside it: {', '.join(bad[:5])}{more}",
                           "copy the files the model needs into the folder itself, or remove the links")


MAX_SAFETENSORS_HEADER = 100 * 1024 * 1024  # what the safetensors library itself accepts
SAFETENSORS_DTYPES = {"BOOL": 1, "U8": 1, "I8": 1, "F8_E5M2": 1, "F8_E4M3": 1, "F8_E8M0": 1, "I16": 2, "U16": 2,
                      "F16": 2, "BF16": 2, "I32": 4, "U32": 4, "F32": 4, "I64": 8, "U64": 8, "F64": 8, "C64": 8,
                      "F4": 1, "F6_E2M3": 1, "F6_E3M2": 1}


def read_safetensors_header(f: Any, size: int, name: str) -> tuple[dict[str, Any], int]:
    """Read and validate a safetensors header: its length bounded by the file and 100 MB, JSON that is an
    object of {dtype, shape, data_offsets} entries whose offsets are non-negative, ordered, inside the
    file and match shape x dtype. One clear error for anything else (never MemoryError/RecursionError)."""
    def bad(why: str) -> LmsmithError:
        return LmsmithError(f"{name} is not a valid safetensors file: {why}", "re-save it with safetensors' save_file")

    head = f.read(8)
    if len(head) < 8:
        raise bad("it is shorter than its 8-byte header length")
    (n,) = struct.unpack("<Q", head)
    if n > min(MAX_SAFETENSORS_HEADER, size - 8):
        raise bad(f"its header claims {n:,} bytes but the file has {size:,}")
    try:
        header = json.loads(f.read(n))
    except (ValueError, RecursionError):
        raise bad("its header is not valid JSON") from None
    if not isinstance(header, dict):
        raise bad("its header is not a JSON object")
    data = size - 8 - n
    for tname, info in header.items():
        if tname == "__metadata__":
            if info is not None and not (isinstance(info, dict) and all(isinstance(v, str) for v in info.values())):
                raise bad("__metadata__ must map strings to strings")
            continue
        if not isinstance(info, dict):
            raise bad(f"the entry of tensor {tname!r} is not an object")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in SAFETENSORS_DTYPES:
            raise bad(f"tensor {tname!r} has an unknown dtype {str(dtype)[:20]!r}")
        if not isinstance(shape, list) or len(shape) > 64 or not all(type(d) is int and 0 <= d < 1 << 62 for d in shape):
            raise bad(f"tensor {tname!r} has an invalid shape")
        if not (isinstance(offs, list) and len(offs) == 2 and all(type(o) is int for o in offs) and 0 <= offs[0] <= offs[1]):
            raise bad(f"tensor {tname!r} has invalid data_offsets {str(offs)[:40]}")
        if offs[1] > data:
            raise LmsmithError(f"{name} is truncated (tensor {tname} runs past the end)")
        numel = 1
        for d in shape:
            numel *= d
        if dtype not in ("F4", "F6_E2M3", "F6_E3M2") and numel * SAFETENSORS_DTYPES[dtype] != offs[1] - offs[0]:
            raise bad(f"tensor {tname!r}: shape {shape} x {dtype} does not match its {offs[1] - offs[0]} bytes")
    return header, n


def tensor_file_name(tname: str) -> str:
    """The per-tensor file name: readable and injective. A name of safe characters is kept as is; any
    other gets `_` for unsafe characters plus `~` and a hash of the full name (`~` never occurs in a
    kept name, so two tensors can never share a file)."""
    if SAFE_TENSOR_RE.fullmatch(tname):
        return f"model-{tname}.safetensors"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", tname)[:100]
    return f"model-{safe}~{hashlib.sha256(tname.encode()).hexdigest()[:32]}.safetensors"


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def looks_like_path(ref: str) -> bool:
    return "/" in ref or ref.startswith(".") or ref.startswith("~") or Path(ref).exists()


_SAID_SHADOWED: set[str] = set()


def is_explicit_path(ref: str) -> bool:
    """Written as a path (`./x`, `/x`, `~/x`, `a/b`): never a registry name."""
    return "/" in ref or ref.startswith(".") or ref.startswith("~")


def parse_ref(ref: str) -> tuple[str, str | None]:
    """Split `NAME`, `NAME@3`, `NAME@alias` into (name, selector)."""
    name, _, sel = ref.partition("@")
    if not NAME_RE.match(name) or (_ and not sel):
        raise LmsmithError(
            f"'{ref}' is not a model reference",
            "use NAME, NAME@VERSION, NAME@ALIAS or a path to a model directory",
        )
    return name, sel or None


class Registry:
    def __init__(self, home: str | Path | None = None):
        self.home = Path(home) if home else lmsmith_home()
        self.root = self.home / "registry"
        self.models_dir = self.root / "models"
        self.locks = self.root / "locks"
        self.tmp = self.root / "tmp"
        try:
            for d in (self.models_dir, self.locks, self.tmp):
                d.mkdir(parents=True, exist_ok=True)
            self.blobs = LocalBlobStore(self.home / "store")
        except OSError as e:
            raise LmsmithError(
                f"cannot use the registry at {self.home}: {e.strerror}",
                "set LMSMITH_HOME to a writable directory",
            ) from None

    # ---------------------------------------------------------------- locking
    @contextlib.contextmanager
    def _lock(self, name: str, shared: bool = False) -> Iterator[None]:
        with open(self.locks / f"{name}.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    # ---------------------------------------------------------------- reading
    def _version_dirs(self, name: str) -> list[int]:
        d = self.models_dir / name
        if not d.is_dir():
            return []
        return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit() and (p / META_FILE).exists())

    def _aliases(self, name: str) -> dict[str, int]:
        p = self.models_dir / name / "aliases.json"
        return json.loads(p.read_text()) if p.exists() else {}

    def _read(self, name: str, version: int) -> ModelVersion:
        d = self.models_dir / name / str(version)
        try:
            mv = ModelVersion.model_validate_json((d / META_FILE).read_text())
        except (OSError, ValueError) as e:
            raise IntegrityError(f"metadata of {name}@{version} is unreadable: {e}", "run `lmsmith models verify`") from None
        mv.path = str(d)
        mv.aliases = sorted(a for a, v in self._aliases(name).items() if v == version)
        return mv

    def names(self) -> list[str]:
        return sorted(p.name for p in self.models_dir.iterdir() if p.is_dir() and self._version_dirs(p.name))

    def list(self, name: str | None = None) -> list[ModelVersion]:
        names = [name] if name else self.names()
        return [self._read(n, v) for n in names for v in self._version_dirs(n)]

    def get(self, ref: str) -> ModelVersion:
        """Resolve a registry ref (`NAME`, `NAME@V`, `NAME@ALIAS`) to its version."""
        name, sel = parse_ref(ref)
        versions = self._version_dirs(name)
        if not versions:
            names = self.names()
            known = ", ".join(names[:10]) or "none yet: try `lmsmith models pull default`"
            hint = did_you_mean(name, names)
            raise LmsmithError(f"unknown model '{name}'" + (f"; {hint}" if hint else ""), f"registered models: {known}")
        if sel is None or sel == "latest":
            return self._read(name, versions[-1])
        if VERSION_RE.fullmatch(sel):
            if int(sel) not in versions:
                raise LmsmithError(f"model '{name}' has no version {sel}", f"versions: {', '.join(map(str, versions))}")
            return self._read(name, int(sel))
        aliases = self._aliases(name)
        if sel not in aliases:
            have = ", ".join(sorted(aliases)) or "none"
            raise LmsmithError(f"model '{name}' has no alias '{sel}'", f"aliases: {have}")
        return self._read(name, aliases[sel])

    def resolve(self, ref: str, verify: bool = True) -> ModelVersion | PathModel:
        """A registry ref or a path to a model directory. Registry versions are hash-checked.

        A bare word that is both a registered name and a folder here means the registered model (a
        folder in the current directory must not silently shadow it); write `./NAME` for the folder."""
        if self.is_path_ref(ref):
            p = Path(ref).expanduser()
            if not p.exists():
                raise LmsmithError(f"model path does not exist: {p}")
            if not p.is_dir():
                raise LmsmithError(f"model path is not a directory: {p}", "a model is a HF model directory")
            adapter = p / "adapter_config.json"
            if adapter.exists():
                base = json.loads(adapter.read_text()).get("base_model_name_or_path")
                return PathModel(path=str(p), kind="adapter", base=base)
            if not (p / "config.json").exists():
                raise LmsmithError(f"{p} has no config.json", "point at a HF model directory")
            return PathModel(path=str(p))
        mv = self.get(ref)
        if verify:
            self.check(mv)
        return mv

    def is_path_ref(self, ref: str) -> bool:
        """Whether `ref` means a folder rather than a registered model (see `resolve`)."""
        return looks_like_path(ref) and not ("@" in ref and "/" not in ref) and not self._shadowed(ref)

    def _shadowed(self, ref: str) -> bool:
        """True when `ref` names both a folder here and a registered model: the registry wins, and we say so."""
        if is_explicit_path(ref) or not NAME_RE.match(ref) or not self._version_dirs(ref):
            return False
        if ref not in _SAID_SHADOWED:
            from lmsmith.progress import console

            _SAID_SHADOWED.add(ref)
            console.print(f"[yellow]'{ref}' is a registered model and a folder here: using the registered model "
                          f"(write ./{ref} for the folder)")
        return True

    # ---------------------------------------------------------------- integrity
    def verify(self, ref: str | ModelVersion, cached: bool = False) -> list[str]:
        """Hash every file of a version; return one problem line per bad file (empty if intact).

        `cached`: a file this process already hashed, unchanged since (same inode, size, mtime, ctime), is not
        read again; `lmsmith models verify` always reads every byte."""
        mv = self.get(ref) if isinstance(ref, str) else ref
        problems = []
        for rel, entry in sorted(mv.files.items()):
            p = mv.dir / rel
            if not p.exists():
                problems.append(f"{rel}: missing")
            elif p.stat().st_size != entry.size:
                problems.append(f"{rel}: size {p.stat().st_size} != recorded {entry.size} (truncated or altered)")
            elif file_digest(p, cached) != entry.sha256:
                problems.append(f"{rel}: sha256 mismatch (file corrupted)")
        return problems

    def check(self, mv: ModelVersion) -> None:
        """Raise IntegrityError when a file of `mv` is damaged (each file hashed once per process)."""
        problems = self.verify(mv, cached=True)
        if problems:
            raise IntegrityError(
                f"{mv.ref} failed its integrity check: {'; '.join(problems)}",
                "the store is damaged; re-import the model or restore the file",
            )

    # ---------------------------------------------------------------- writing
    def register(
        self,
        src: str | Path,
        name: str,
        *,
        lineage: Lineage | None = None,
        tags: dict[str, str] | None = None,
        metrics: dict[str, Any] | None = None,
        kind: str = "model",
        base: str | None = None,
        progress: Callable[[str, int, int], None] | None = None,
    ) -> ModelVersion:
        """Store a HF model (or adapter) directory as the next version of `name`."""
        if not NAME_RE.match(name):
            raise LmsmithError(f"invalid model name '{name}'", "use letters, digits, '.', '_' or '-' (max 100)")
        src = Path(src)
        if not src.is_dir():
            raise LmsmithError(f"not a directory: {src}")
        check_links(src)
        for p in src.rglob("*"):
            if p.suffix in PICKLE_SUFFIXES and p.is_file():
                raise LmsmithError(f"{p.name} is a pickle file", "convert it first: `lmsmith models import` does this safely")
        before = self.blobs.total_bytes()
        stage = self.tmp / f"v-{uuid.uuid4().hex}"
        stage.mkdir()
        try:
            with self._lock("store", shared=True):  # no gc while our blobs are not yet referenced
                files = self._store_tree(src, stage, progress)
                added = self.blobs.total_bytes() - before
                with self._lock(f"model-{name}"):
                    versions = self._version_dirs(name)
                    version = versions[-1] + 1 if versions else 1
                    mv = ModelVersion(
                        name=name, version=version, kind=kind, base=base, created=now_iso(), files=files,
                        lineage=lineage or Lineage(), tags=tags or {}, metrics=metrics or {},
                        stored_bytes=max(added, 0),
                    )
                    (stage / META_FILE).write_text(mv.model_dump_json(indent=2, exclude={"path", "aliases"}))
                    final = self.models_dir / name / str(version)
                    final.parent.mkdir(parents=True, exist_ok=True)
                    os.rename(stage, final)  # atomic: a version is either whole or absent
        finally:
            if stage.exists():
                shutil.rmtree(stage, ignore_errors=True)
        return self._read(name, version)

    def _store_tree(self, src: Path, stage: Path, progress) -> dict[str, FileEntry]:
        files: dict[str, FileEntry] = {}
        paths = [p for p in sorted(src.rglob("*")) if p.is_file() and not (set(p.relative_to(src).parts) & SKIP_NAMES)]
        weight_files = [p for p in paths if p.suffix == ".safetensors" and p.parent == src and p.name.startswith("model")]
        index_src = src / INDEX_FILE
        weight_map: dict[str, str] = {}
        total_size = 0
        for i, p in enumerate(paths):
            if progress:
                progress(p.name, i, len(paths))
            if p == index_src:
                continue  # rebuilt below
            rel = p.relative_to(src).as_posix()
            if p in weight_files:
                for tname, digest, size, fname in self._split_safetensors(p):
                    if tname in weight_map:
                        raise LmsmithError(f"tensor '{tname}' appears twice ({weight_map[tname]} and {p.name})",
                                           "a model's shards must not repeat a tensor; fix or re-save the checkpoint")
                    if fname in files:
                        raise LmsmithError(f"tensor '{tname}' maps to file {fname}, which is already taken")
                    files[fname] = FileEntry(sha256=digest, size=size)
                    weight_map[tname] = fname
                    total_size += size
                    self.blobs.materialize(digest, stage / fname)
                continue
            digest = self.blobs.put_file(p)
            files[rel] = FileEntry(sha256=digest, size=p.stat().st_size)
            self.blobs.materialize(digest, stage / rel)
        if weight_map:
            index = json.dumps({"metadata": {"total_size": total_size, "format": "lmsmith-per-tensor"},
                                "weight_map": dict(sorted(weight_map.items()))}, indent=2).encode()
            digest = self.blobs.put_bytes(index)
            files[INDEX_FILE] = FileEntry(sha256=digest, size=len(index))
            self.blobs.materialize(digest, stage / INDEX_FILE)
        return files

    def _split_safetensors(self, path: Path) -> Iterator[tuple[str, str, int, str]]:
        """Yield (tensor name, blob digest, size, file name): one standalone safetensors file per tensor."""
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            header, n = read_safetensors_header(f, size, path.name)
            meta = header.pop("__metadata__", None) or {"format": "pt"}
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 0 else None
            try:
                for tname, info in header.items():
                    a, b = info["data_offsets"]
                    sub = {"__metadata__": meta, tname: {"dtype": info["dtype"], "shape": info["shape"], "data_offsets": [0, b - a]}}
                    hb = json.dumps(sub, separators=(",", ":")).encode()
                    hb += b" " * (-len(hb) % 8)
                    body = memoryview(mm)[8 + n + a: 8 + n + b] if mm else memoryview(b"")
                    digest = self.blobs.put_chunks([struct.pack("<Q", len(hb)), hb, body])
                    body.release()
                    yield tname, digest, 8 + len(hb) + (b - a), tensor_file_name(tname)
            finally:
                if mm:
                    mm.close()

    def set_alias(self, ref: str, alias: str) -> ModelVersion:
        if not ALIAS_RE.match(alias) or alias == "latest":
            raise LmsmithError(f"invalid alias '{alias}'",
                               "an alias starts with a letter, uses letters, digits, '.', '_' or '-', and is not 'latest'")
        mv = self.get(ref)
        with self._lock(f"model-{mv.name}"):
            aliases = self._aliases(mv.name)
            aliases[alias] = mv.version
            self._write_json(self.models_dir / mv.name / "aliases.json", aliases)
        return self._read(mv.name, mv.version)

    def remove_alias(self, name: str, alias: str) -> None:
        with self._lock(f"model-{name}"):
            aliases = self._aliases(name)
            if alias not in aliases:
                raise LmsmithError(f"model '{name}' has no alias '{alias}'")
            del aliases[alias]
            self._write_json(self.models_dir / name / "aliases.json", aliases)

    def update(self, ref: str, *, metrics: dict[str, Any] | None = None, tags: dict[str, str] | None = None,
               eval_run: dict[str, Any] | None = None) -> ModelVersion:
        """Merge metrics/tags into a version's metadata; `eval_run` is appended to its eval history."""
        mv = self.get(ref)
        with self._lock(f"model-{mv.name}"):
            mv = self._read(mv.name, mv.version)
            mv.metrics.update(metrics or {})
            mv.tags.update(tags or {})
            if eval_run is not None:
                mv.evals.append(eval_run)
            self._write_json(mv.dir / META_FILE, json.loads(mv.model_dump_json(exclude={"path", "aliases"})))
        return self._read(mv.name, mv.version)

    def remove(self, ref: str, force: bool = False) -> ModelVersion:
        mv = self.get(ref)
        dependents = [o.ref for o in self.list() if o.base and o.base in (mv.ref, mv.name) and o.ref != mv.ref]
        if dependents and not force:
            raise LmsmithError(f"{mv.ref} is the base of {', '.join(dependents)}", "remove those first or pass --force")
        with self._lock("store"), self._lock(f"model-{mv.name}"):
            trash = self.tmp / f"rm-{uuid.uuid4().hex}"
            os.rename(mv.dir, trash)
            aliases = {a: v for a, v in self._aliases(mv.name).items() if v != mv.version}
            if (self.models_dir / mv.name).exists():
                self._write_json(self.models_dir / mv.name / "aliases.json", aliases)
                if not self._version_dirs(mv.name):
                    shutil.rmtree(self.models_dir / mv.name, ignore_errors=True)
            shutil.rmtree(trash, ignore_errors=True)
            self._gc_locked()
        return mv

    def gc(self) -> int:
        """Delete blobs no version references, and leftovers of crashed imports. Returns bytes freed."""
        return self.gc_details()["freed"]

    def gc_details(self) -> dict[str, Any]:
        """gc, saying what it did: {"freed", "blobs", "staging", "kept": [staging left in place, with why]}."""
        with self._lock("store"):
            return self._gc_locked()

    def _gc_locked(self) -> dict[str, Any]:
        used = {e.sha256 for mv in self.list() for e in mv.files.values()}
        freed = blobs = staging = 0
        for d in list(self.blobs.digests()):
            if d not in used:
                freed += self.blobs.size(d)
                blobs += 1
                self.blobs.delete(d)
        # Under the exclusive store lock no registration is running, so its staging (v-*) and blob temp
        # files are leftovers of a crash. Model conversions (import-*) run outside the lock: only an
        # hour-old one is surely dead; younger ones are reported, not counted as freed.
        cutoff = time.time() - 3600
        kept: list[str] = []
        for p in list(self.tmp.iterdir()) + list(self.blobs.tmp.iterdir()):
            if p.name.startswith("import-") and p.stat().st_mtime >= cutoff:
                kept.append(f"{p} (an import may still be converting; removed once an hour old)")
                continue
            size = sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
            if not p.exists():
                freed += size
                staging += 1
            else:
                kept.append(f"{p} (could not be removed)")
        return {"freed": freed, "blobs": blobs, "staging": staging, "kept": kept}

    def export(self, ref: str, dest: str | Path, shard_bytes: int = 5 * 1024**3) -> Path:
        """Write a standalone HF directory with regular (consolidated) safetensors shards."""
        from safetensors import safe_open
        from safetensors.torch import save_file

        mv = self.resolve(ref)
        dest = Path(dest)
        if dest.exists() and not dest.is_dir():
            raise LmsmithError(f"cannot export to {dest}: it is a file", "give a new or empty directory")
        if dest.exists() and any(dest.iterdir()):
            raise LmsmithError(f"export directory {dest} is not empty", "choose a new or empty directory")
        tmp = dest.with_name(dest.name + f".tmp-{uuid.uuid4().hex[:8]}")
        tmp.mkdir(parents=True)
        index = mv.dir / INDEX_FILE
        for rel in mv.files:
            if rel == INDEX_FILE or (index.exists() and rel.startswith("model-") and rel.endswith(".safetensors")):
                continue
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(mv.dir / rel, tmp / rel)
        if index.exists():
            weight_map = json.loads(index.read_text())["weight_map"]
            shards: list[dict[str, Any]] = [{}]
            sizes = [0]
            for tname, fname in weight_map.items():
                with safe_open(mv.dir / fname, "pt") as f:
                    t = f.get_tensor(tname)
                nbytes = t.numel() * t.element_size()
                if sizes[-1] and sizes[-1] + nbytes > shard_bytes:
                    shards.append({})
                    sizes.append(0)
                shards[-1][tname] = t
                sizes[-1] += nbytes
            if len(shards) == 1:
                save_file(shards[0], tmp / "model.safetensors", metadata={"format": "pt"})
            else:
                wm = {}
                for i, sh in enumerate(shards, 1):
                    fn = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                    save_file(sh, tmp / fn, metadata={"format": "pt"})
                    wm.update({k: fn for k in sh})
                (tmp / INDEX_FILE).write_text(json.dumps({"metadata": {"total_size": sum(sizes)}, "weight_map": wm}, indent=2))
        for p in tmp.rglob("*"):
            if p.is_file():
                os.chmod(p, 0o644)
        if dest.exists():
            dest.rmdir()
        os.rename(tmp, dest)
        return dest

    @staticmethod
    def _write_json(path: Path, obj: Any) -> None:
        tmp = path.with_name(path.name + f".tmp-{uuid.uuid4().hex[:8]}")
        tmp.write_text(json.dumps(obj, indent=2))
        os.replace(tmp, path)

    def store_bytes(self) -> int:
        return self.blobs.total_bytes()
