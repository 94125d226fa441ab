"""Content-addressed blob storage behind a small interface.

The registry never touches paths of blobs directly: it asks a `BlobStore` to put bytes (getting back
their sha256), to check, to materialize a blob at a destination path, or to delete. `LocalBlobStore`
keeps blobs under one directory and materializes by hard link, so a version directory costs no disk.
A shared filesystem works as is; an object store (S3 via fsspec) would implement the same methods,
materializing by download into a local cache.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Protocol

CHUNK = 1 << 20


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


# (device, inode, size, mtime, ctime) of a file -> its sha256, for files hashed in this process. A blob is
# shared (hard-linked) by the versions that hold it, so keying by inode hashes it once for all of them. Any write
# or chmod changes ctime (and a write mtime), so a damaged file is never answered from the cache; a new hard link
# changes ctime too, which only costs one more read.
_HASHED: dict[tuple[int, int, int, int, int], str] = {}


def clear_hash_cache() -> None:
    """Forget the hashes of this process (the next check reads every file again, as a new process would)."""
    _HASHED.clear()


def file_digest(path: str | Path, cached: bool = True) -> str:
    """sha256 of a file; `cached`: reuse this process's earlier hash of the same unchanged inode."""
    st = os.stat(path)
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    if cached and key in _HASHED:
        return _HASHED[key]
    digest = sha256_file(path)
    _HASHED[key] = digest
    return digest


class BlobStore(Protocol):
    def put_file(self, src: Path, move: bool = False) -> str: ...
    def put_bytes(self, data: bytes) -> str: ...
    def has(self, digest: str) -> bool: ...
    def size(self, digest: str) -> int: ...
    def materialize(self, digest: str, dest: Path) -> None: ...
    def open(self, digest: str) -> BinaryIO: ...
    def verify(self, digest: str) -> bool: ...
    def delete(self, digest: str) -> None: ...
    def digests(self) -> Iterator[str]: ...
    def total_bytes(self) -> int: ...


class LocalBlobStore:
    """Blobs at ROOT/sha256/ab/abcdef…, written once via temp file + atomic rename, kept read-only."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.tmp = self.root / "tmp"
        (self.root / "sha256").mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)

    def path(self, digest: str) -> Path:
        return self.root / "sha256" / digest[:2] / digest

    def has(self, digest: str) -> bool:
        return self.path(digest).exists()

    def size(self, digest: str) -> int:
        return self.path(digest).stat().st_size

    def _commit(self, tmp_path: Path, digest: str) -> str:
        final = self.path(digest)
        if final.exists():
            tmp_path.unlink(missing_ok=True)
            return digest
        final.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(tmp_path, 0o444)
        os.replace(tmp_path, final)  # atomic; a concurrent writer of the same digest wrote the same bytes
        return digest

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if self.has(digest):
            return digest
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return self._commit(Path(name), digest)

    def put_chunks(self, chunks: Iterable[bytes | memoryview]) -> str:
        """Stream bytes into a blob, hashing as they arrive (no full copy in memory)."""
        h = hashlib.sha256()
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        with os.fdopen(fd, "wb") as f:
            for c in chunks:
                h.update(c)
                f.write(c)
            f.flush()
            os.fsync(f.fileno())
        return self._commit(Path(name), h.hexdigest())

    def put_file(self, src: Path, move: bool = False) -> str:
        digest = sha256_file(src)
        if self.has(digest):
            if move:
                Path(src).unlink(missing_ok=True)
            return digest
        fd, name = tempfile.mkstemp(dir=self.tmp, prefix="blob-")
        os.close(fd)
        if move:
            try:
                os.replace(src, name)
            except OSError:
                shutil.copyfile(src, name)
        else:
            shutil.copyfile(src, name)
        return self._commit(Path(name), digest)

    def materialize(self, digest: str, dest: Path) -> None:
        """Make `dest` a new file with the blob's bytes (a hard link, or a copy across filesystems).

        Never writes into an existing file: `dest` may itself be a link to another blob, and writing
        through it would corrupt every version sharing that blob. An existing `dest` must already be
        this blob; anything else is an error."""
        src = self.path(digest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(dest):
            if not dest.is_symlink() and os.path.samefile(src, dest):
                return
            raise FileExistsError(f"{dest} already exists and is not blob {digest[:12]}")
        try:
            os.link(src, dest)
            return
        except FileExistsError:
            raise FileExistsError(f"{dest} appeared while materializing blob {digest[:12]}") from None
        except OSError:  # another filesystem, or no hard links: copy into a file only we create
            pass
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o644)
        try:
            with os.fdopen(fd, "wb") as out, open(src, "rb") as f:
                shutil.copyfileobj(f, out, CHUNK)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        os.chmod(dest, 0o444)

    def open(self, digest: str) -> BinaryIO:
        return open(self.path(digest), "rb")

    def verify(self, digest: str) -> bool:
        p = self.path(digest)
        return p.exists() and sha256_file(p) == digest

    def delete(self, digest: str) -> None:
        self.path(digest).unlink(missing_ok=True)

    def digests(self) -> Iterator[str]:
        for sub in (self.root / "sha256").iterdir():
            if sub.is_dir():
                for p in sub.iterdir():
                    yield p.name

    def total_bytes(self) -> int:
        return sum(self.path(d).stat().st_size for d in self.digests())
