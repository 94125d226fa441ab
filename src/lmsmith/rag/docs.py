"""Documents in, chunks out: JSONL (`id`, `text`, any metadata fields), .txt and .md files, directories of them;
chunks of at most N embedder tokens cut on sentence boundaries, consecutive chunks sharing ~`overlap` tokens.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from lmsmith.errors import LmsmithError

SUFFIXES = (".jsonl", ".txt", ".md")
# a sentence ends at . ! ? … (optionally followed by quotes/brackets) before whitespace, or at a blank line
SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'»”)\]]*\s+|\n\s*\n")


@dataclass
class Document:
    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    @property
    def hash(self) -> str:
        """Content hash: text and metadata; the incremental index re-embeds a document when it changes."""
        body = json.dumps({"text": self.text, "metadata": self.metadata}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(body.encode()).hexdigest()


def source_files(path: str | Path) -> list[Path]:
    p = Path(path).expanduser()
    if not p.exists():
        raise LmsmithError(f"no such file or directory: {p}")
    if p.is_file():
        if p.suffix not in SUFFIXES:
            raise LmsmithError(f"cannot index {p.name}", f"give {', '.join(SUFFIXES)} files or a directory of them")
        return [p]
    files = sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in SUFFIXES
                   and not any(part.startswith(".") for part in f.relative_to(p).parts))
    if not files:
        raise LmsmithError(f"{p} holds no {', '.join(SUFFIXES)} files")
    return files


def read_documents(path: str | Path) -> tuple[list[Document], list[Path]]:
    """All documents under `path` and the files they came from. Ids must be unique."""
    root = Path(path).expanduser()
    files = source_files(root)
    docs: list[Document] = []
    for f in files:
        rel = f.name if root.is_file() else f.relative_to(root).as_posix()
        if f.stat().st_size == 0 or not f.read_text(encoding="utf-8", errors="replace").strip():
            raise LmsmithError(f"{f} is empty", "remove it or give it some text")
        docs += read_jsonl(f, rel) if f.suffix == ".jsonl" else [read_text_file(f, rel)]
    seen: dict[str, str] = {}
    for d in docs:
        if d.id in seen:
            raise LmsmithError(f"document id '{d.id}' appears twice ({seen[d.id]} and {d.source})",
                               "ids must be unique across everything indexed together")
        seen[d.id] = d.source
    return docs, files


def read_jsonl(f: Path, rel: str) -> list[Document]:
    docs = []
    with open(f, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except ValueError as e:
                raise LmsmithError(f"{f}:{n} is not valid JSON: {e.msg}") from None
            if not isinstance(rec, dict):
                raise LmsmithError(f"{f}:{n} is not a JSON object", 'each line is {"id": ..., "text": ..., ...}')
            if "text" not in rec:
                raise LmsmithError(f"{f}:{n} has no 'text' field", 'each line needs "text" (and "id"; other fields become metadata)')
            text = rec.pop("text")
            if not isinstance(text, str):
                raise LmsmithError(f"{f}:{n}: 'text' must be a string")
            doc_id = str(rec.pop("id")) if rec.get("id") is not None else f"{rel}:{n}"
            meta = {k: v for k, v in rec.items() if v is not None}
            meta.setdefault("source", rel)
            docs.append(Document(doc_id, text, meta, f"{f}:{n}"))
    return docs


def read_text_file(f: Path, rel: str) -> Document:
    text = f.read_text(encoding="utf-8", errors="replace")
    meta: dict[str, Any] = {"source": rel}
    if f.suffix == ".md":
        title = re.search(r"^#\s+(.+)$", text, flags=re.MULTILINE)
        if title:
            meta["title"] = title.group(1).strip()
    return Document(rel, text, meta, str(f))


def split_sentences(text: str) -> list[str]:
    """Sentences with their trailing whitespace kept, so joining them restores the text."""
    out, start = [], 0
    for m in SENTENCE_END.finditer(text):
        out.append(text[start:m.end()])
        start = m.end()
    if start < len(text):
        out.append(text[start:])
    return [s for s in out if s.strip()]


def chunk_text(text: str, count_tokens: Callable[[str], int], chunk_tokens: int = 256, overlap: int = 32,
               split_long: Callable[[str, int], list[str]] | None = None) -> list[str]:
    """Pack whole sentences into chunks of at most `chunk_tokens` tokens; each chunk after the first starts
    with the last sentences of the previous one that fit in `overlap` tokens. A sentence longer than a chunk
    is cut by tokens (`split_long`)."""
    if chunk_tokens < 8:
        raise LmsmithError("--chunk-tokens must be at least 8")
    if not 0 <= overlap < chunk_tokens:
        raise LmsmithError("--overlap must be at least 0 and smaller than --chunk-tokens")
    units: list[tuple[str, int]] = []
    for s in split_sentences(text):
        n = count_tokens(s)
        if n > chunk_tokens and split_long is not None:
            units += [(p, count_tokens(p)) for p in split_long(s, chunk_tokens)]
        else:
            units.append((s, n))
    chunks: list[str] = []
    cur: list[tuple[str, int]] = []
    size = 0
    fresh = 0  # sentences in `cur` not carried over from the previous chunk
    for s, n in units:
        if cur and size + n > chunk_tokens and fresh:
            chunks.append("".join(u for u, _ in cur).strip())
            carry: list[tuple[str, int]] = []
            c = 0
            for u in reversed(cur):
                if c + u[1] > overlap or c + u[1] + n > chunk_tokens:
                    break
                carry.insert(0, u)
                c += u[1]
            cur, size, fresh = carry, c, 0
        cur.append((s, n))
        size += n
        fresh += 1
    if cur and fresh:
        chunks.append("".join(u for u, _ in cur).strip())
    return [c for c in chunks if c]


def token_splitter(tokenizer) -> Callable[[str, int], list[str]]:
    """Cut a long sentence into pieces of at most `n` tokens, at token boundaries (character offsets kept)."""
    def split(text: str, n: int) -> list[str]:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        offs = enc["offset_mapping"]
        pieces = []
        for s in range(0, len(offs), n):
            part = offs[s:s + n]
            pieces.append(text[part[0][0]:part[-1][1]])
        return [p for p in pieces if p.strip()]

    return split
