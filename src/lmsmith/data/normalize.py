"""Unicode normalization and whitespace fixes: the first cleaning step, so every later step (hashes,
heuristics, language ID) sees one canonical spelling of the same text."""

from __future__ import annotations

import hashlib
import re
import unicodedata

# Invisible characters that split words for a tokenizer but not for a reader.
_INVISIBLE = dict.fromkeys(map(ord, "\u200b\u200c\u200d\u2060\ufeff\u00ad"), None)
# C0/C1 control characters except tab and newline.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200a\u202f\u205f\u3000]+")
_MANY_NEWLINES = re.compile(r"\n{3,}")
_TRAILING = re.compile(r" +\n| +$")
_LEADING = re.compile(r"\n +")
_WORDS = re.compile(r"\w+", re.UNICODE)


def normalize_text(text: str, form: str = "NFC") -> str:
    """NFC (or another form), line endings to \\n, no control or zero-width characters, single spaces,
    at most one empty line between paragraphs, no leading/trailing whitespace."""
    if form:
        text = unicodedata.normalize(form, text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").translate(_INVISIBLE)
    text = _CONTROL.sub("", text)
    text = _SPACES.sub(" ", text)
    text = _TRAILING.sub(lambda m: "\n" if m.group(0).endswith("\n") else "", text)
    text = _LEADING.sub("\n", text)
    text = _MANY_NEWLINES.sub("\n\n", text)
    return text.strip()


def dedup_key(text: str) -> str:
    """What exact dedup compares: lowercase words only, so case, punctuation and spacing don't matter."""
    return " ".join(_WORDS.findall(text.lower()))


def text_hash(text: str) -> int:
    """64-bit hash of the dedup key (blake2b: stable across processes and Python versions)."""
    return int.from_bytes(hashlib.blake2b(dedup_key(text).encode(), digest_size=8).digest(), "little")
