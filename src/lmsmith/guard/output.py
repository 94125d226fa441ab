"""The output guard: secrets, PII and system-prompt leakage in a completion, redacted or reported for blocking.

- secrets: the shapes of common API keys and tokens (OpenAI, Anthropic, AWS, GitHub, Slack, Google, Stripe,
  Hugging Face, JWTs), PEM private keys, and `password = ...` / `api_key: ...` assignments (value only);
- PII: e-mail addresses, phone numbers and IP addresses through `lmsmith.data.pii` (the data stage's scrubber);
- system-prompt leakage: word n-grams shared with the system prompt. Runs of `ngram` or more consecutive
  words copied from it are redacted; the result is flagged when they cover `leak_ratio` of the system
  prompt's n-grams or a run is `min_run_words` long.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field

from lmsmith.data.pii import scrub_pii
from lmsmith.guard.rules import normalize

SECRET_PATTERNS: dict[str, re.Pattern] = {
    "private_key": re.compile(r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----[\s\S]*?(?:-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|\Z)"),
    "anthropic_key": re.compile(r"\bsk-ant-[A-Za-z0-9_-]{20,}"),
    "openai_key": re.compile(r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_-]{20,}"),
    "aws_access_key": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "github_token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b"),
    "slack_token": re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{10,}"),
    "google_api_key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "stripe_key": re.compile(r"\b[rs]k_(?:live|test)_[0-9A-Za-z]{16,}\b"),
    "huggingface_token": re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),
    "jwt": re.compile(r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}"),
}
# `password: hunter2hunter2`, `"api_key" = "..."`, `AWS_SECRET_ACCESS_KEY=...`: only the value is redacted
ASSIGNMENT = re.compile(r"(?i)\b((?:[a-z0-9_]*_)?(?:api[_-]?key|secret(?:[_-]?access)?[_-]?key|secret|token|password|passwd|pwd))"
                        r"(\"?'?\s*[:=]\s*[\"']?)([^\s\"',;]{8,})")


@dataclass
class OutputResult:
    text: str
    flagged: bool
    reasons: list[str]
    counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {"flagged": self.flagged, "reasons": self.reasons, "counts": self.counts}


@dataclass
class OutputGuard:
    """`OutputGuard().check(text, system_prompt=...)` -> OutputResult with the redacted text."""

    secrets: bool = True
    pii: tuple[str, ...] = ("email", "phone", "ip")
    leakage: bool = True
    ngram: int = 5
    leak_ratio: float = 0.3
    min_run_words: int = 12

    def check(self, text: str, system_prompt: str | None = None) -> OutputResult:
        counts: Counter = Counter()
        if self.secrets:
            text = self._secrets(text, counts)
        if self.pii:
            text, pii = scrub_pii(text, self.pii)
            counts.update({f"pii:{k}": v for k, v in pii.items()})
        if self.leakage and system_prompt:
            text = self._leakage(text, system_prompt, counts)
        reasons = sorted(counts)
        return OutputResult(text, bool(reasons), reasons, dict(counts))

    def _secrets(self, text: str, counts: Counter) -> str:
        for name, pat in SECRET_PATTERNS.items():
            text, n = pat.subn(f"[REDACTED:{name}]", text)
            if n:
                counts[f"secret:{name}"] += n

        def assign(m: re.Match) -> str:
            if m.group(3).startswith("[REDACTED"):
                return m.group(0)
            counts["secret:assignment"] += 1
            return m.group(1) + m.group(2) + "[REDACTED:secret]"

        return ASSIGNMENT.sub(assign, text)

    def _leakage(self, text: str, system_prompt: str, counts: Counter) -> str:
        n = self.ngram
        sys_words = [normalize(w) for w in re.findall(r"\w+", system_prompt)]
        if len(sys_words) < n:
            return text
        sys_grams = {tuple(sys_words[i:i + n]) for i in range(len(sys_words) - n + 1)}
        spans = [(m.start(), m.end(), normalize(m.group(0))) for m in re.finditer(r"\w+", text)]
        words = [w for _, _, w in spans]
        hit = [tuple(words[i:i + n]) in sys_grams for i in range(len(words) - n + 1)]
        covered = [False] * len(words)
        for i, h in enumerate(hit):
            if h:
                for j in range(i, i + n):
                    covered[j] = True
        runs, i = [], 0
        while i < len(words):  # maximal runs of covered words
            if covered[i]:
                j = i
                while j + 1 < len(words) and covered[j + 1]:
                    j += 1
                runs.append((i, j))
                i = j + 1
            else:
                i += 1
        shared = {tuple(words[i:i + n]) for i, h in enumerate(hit) if h}
        ratio = len(shared) / len(sys_grams)
        longest = max((b - a + 1 for a, b in runs), default=0)
        if not runs or (ratio < self.leak_ratio and longest < min(self.min_run_words, len(sys_words))):
            return text
        counts["system_prompt_leak"] += 1
        for a, b in reversed(runs):
            text = text[:spans[a][0]] + "[REDACTED:system_prompt]" + text[spans[b][1]:]
        return text
