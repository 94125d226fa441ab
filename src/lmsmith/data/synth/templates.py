"""Prompt templates: defaults per generator, overridable from a file (`--template NAME=FILE`).

Templates use `{field}` placeholders, filled by plain substitution (no attribute or index access, no code);
`{{` and `}}` stand for literal braces. Each template's hash goes into the cache key and the output metadata.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lmsmith.errors import LmsmithError

LANGUAGES = {"cs": "Czech", "sk": "Slovak", "pl": "Polish", "sl": "Slovene", "hr": "Croatian", "sr": "Serbian",
             "hu": "Hungarian", "de": "German", "en": "English", "fr": "French", "es": "Spanish", "it": "Italian",
             "uk": "Ukrainian", "ru": "Russian", "bg": "Bulgarian", "ro": "Romanian", "nl": "Dutch", "pt": "Portuguese"}

_FIELD = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")


def language_name(code: str | None) -> str:
    """'cs' -> 'Czech'; no code -> 'the same language as the input'."""
    if not code:
        return "the same language as the input"
    return LANGUAGES.get(code.lower(), code)


def fields(template: str) -> set[str]:
    return {m.group(1) for m in _FIELD.finditer(template) if m.group(1)}


def fill(template: str, **values: object) -> str:
    def sub(m: re.Match) -> str:
        if m.group(0) == "{{":
            return "{"
        if m.group(0) == "}}":
            return "}"
        return str(values[m.group(1)])

    return _FIELD.sub(sub, template)


def template_hash(template: str) -> str:
    return hashlib.sha256(template.encode()).hexdigest()[:16]


def load_templates(defaults: dict[str, str], overrides: list[str], generator: str) -> dict[str, str]:
    """Apply `NAME=FILE` overrides (a bare FILE overrides the generator's only, or main, template); each
    override may use only the placeholders its default uses."""
    out = dict(defaults)
    for item in overrides:
        name, sep, path = item.partition("=")
        if not sep:
            name, path = next(iter(defaults)), item
        if name not in defaults:
            raise LmsmithError(f"synth {generator} has no template '{name}'", f"templates: {', '.join(defaults)}")
        p = Path(path).expanduser()
        if not p.is_file():
            raise LmsmithError(f"template file not found: {p}")
        text = p.read_text(encoding="utf-8")
        unknown = fields(text) - fields(defaults[name])
        if unknown:
            raise LmsmithError(f"template {p} uses unknown placeholder(s) {', '.join(sorted('{' + u + '}' for u in unknown))}",
                               f"'{name}' can use: {', '.join(sorted('{' + f + '}' for f in fields(defaults[name])))}; "
                               "write {{ and }} for literal braces")
        out[name] = text
    return out
