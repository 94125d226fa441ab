"""PII scrubbing: e-mail addresses, phone numbers and IP addresses are replaced by placeholders, and
each replacement is counted so the report can say how much was scrubbed."""

from __future__ import annotations

import ipaddress
import re
from collections import Counter

EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])")
# International (+420 601 234 567, +48 (22) 123-45-67) or grouped local numbers (601 234 567, 555-123-4567).
PHONE = re.compile(
    r"(?<![\w+])(?<!\d[ .-])(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{2,4}(?:[ .-]?\d{2,4}){2,4}(?![\w@])")
IPV4 = re.compile(r"(?<![\w.])(?:\d{1,3}\.){3}\d{1,3}(?!\w|\.\d)")
IPV6 = re.compile(r"(?<![\w:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![\w:])")

PLACEHOLDERS = {"email": "<EMAIL>", "phone": "<PHONE>", "ip": "<IP>"}


def _phone_ok(s: str) -> bool:
    digits = sum(c.isdigit() for c in s)
    if not 9 <= digits <= 15:
        return False
    if not s.startswith(("+", "(")) and s.replace(" ", "").endswith("000"):
        return False  # "300 000 000": a large number written with thousand separators, not a phone
    if re.fullmatch(r"\d+", s) and not 9 <= len(s) <= 10:
        return False  # a long run of digits without separators is more often an id than a phone
    return not re.fullmatch(r"(19|20)\d\d[-.](0?[1-9]|1[0-2])[-.]\d{1,2}.*", s)  # ISO dates


def _ip_ok(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return s.count(":") >= 2 or s.count(".") == 3


def scrub_pii(text: str, kinds: tuple[str, ...] = ("email", "phone", "ip"),
              placeholders: dict[str, str] | None = None) -> tuple[str, Counter]:
    """Return the text with PII replaced and a Counter of replacements per kind."""
    ph = {**PLACEHOLDERS, **(placeholders or {})}
    counts: Counter = Counter()

    def sub(kind: str, pattern: re.Pattern, ok, s: str) -> str:
        def repl(m: re.Match) -> str:
            if ok is not None and not ok(m.group(0)):
                return m.group(0)
            counts[kind] += 1
            return ph[kind]

        return pattern.sub(repl, s)

    if "email" in kinds:
        text = sub("email", EMAIL, None, text)
    if "ip" in kinds:  # before phones: "192.168.100.200" must not look like a phone number
        text = sub("ip", IPV6, _ip_ok, text)
        text = sub("ip", IPV4, _ip_ok, text)
    if "phone" in kinds:
        text = sub("phone", PHONE, _phone_ok, text)
    return text, counts
