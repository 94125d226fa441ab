"""The input guard: score a text for prompt injection with rules + the classifier, over overlapping windows.

A long document is cut into windows of `window_words` words overlapping by half, and each window is scored
alone, so three injected sentences at 70% of a 1,000-word page are judged next to their neighbours rather
than diluted by the whole page. Base64 and hex runs (and the rot13 reading of the text) are decoded and the
decoded text is scanned again. The document's score is its worst window's; `reasons` name what fired.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from lmsmith.errors import LmsmithError
from lmsmith.guard.model import GuardModel
from lmsmith.guard.rules import count_control_tokens, match_rules, normalize, strip_control_tokens

_B64 = re.compile(r"(?<![A-Za-z0-9+/])[A-Za-z0-9+/]{16,}={0,2}(?![A-Za-z0-9+/=])")
_HEX = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){8,}(?![0-9A-Fa-f])")
_ROT13_HINT = re.compile(r"rot-?\s?13", re.I)
_WORDS = re.compile(r"\S+")
CONTROL_TOKEN_SCORE = 0.99  # the score of a text carrying chat-template control strings (`control_tokens_flag`)
_SENT_END = re.compile(r"[.!?;:]+[\"'”“»«)\]]*(?=\s)|\n+")


@dataclass
class ScanResult:
    id: str | None
    score: float
    flagged: bool
    reasons: list[str]
    control_tokens: dict[str, int] = field(default_factory=dict)
    span: tuple[int, int] = (0, 0)  # characters of the worst window
    details: list[str] = field(default_factory=list)  # the matched snippets, for people

    def to_dict(self, full: bool = False) -> dict:
        d = {"id": self.id, "score": round(self.score, 4), "flagged": self.flagged, "reasons": self.reasons}
        if full:
            d.update(control_tokens=self.control_tokens, span=list(self.span), details=self.details)
        return d


@dataclass
class _Window:
    logit: float
    ngram_logit: float
    categories: set[str]
    snippets: list[str]
    span: tuple[int, int]
    patterns: set[str] = field(default_factory=set)


def _printable(s: str) -> bool:
    return bool(s) and sum(c.isprintable() or c in "\n\t" for c in s) / len(s) > 0.95 and " " in s


def decode_payloads(text: str) -> list[tuple[str, str]]:
    """(encoding, decoded text) for each base64 or hex run that decodes to readable UTF-8 text."""
    out = []
    for m in _B64.finditer(text):
        s = m.group(0)
        try:
            dec = base64.b64decode(s + "=" * (-len(s) % 4), validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if _printable(dec):
            out.append(("base64", dec))
    for m in _HEX.finditer(text):
        try:
            dec = bytes.fromhex(m.group(0)).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            continue
        if _printable(dec):
            out.append(("hex", dec))
    return out


class Guard:
    """`Guard().scan(text)` -> ScanResult. `model`: a directory with guard.safetensors + guard.json (default:
    the shipped model); `threshold` overrides the model's; `use_rules` / `use_classifier` switch the parts off
    (for ablations); `extra_control_tokens`: a tokenizer's special tokens, which like the common template
    markers flag a text outright unless `control_tokens_flag=False`; `hf_model`: an optional HF
    sequence classifier (a ref or path) whose injection probability is also taken into account; `fpr`: use the
    model's stored operating point for that validation false-positive rate (0.01 or 0.05) as the threshold."""

    def __init__(self, model: str | Path | GuardModel | None = None, threshold: float | None = None,
                 window_words: int = 80, use_rules: bool = True, use_classifier: bool = True,
                 extra_control_tokens: Iterable[str] = (), hf_model: str | None = None, hf_threshold: float = 0.5,
                 languages: tuple[str, ...] | None = None, sentences: bool | None = None,
                 control_tokens_flag: bool = True, fpr: float | None = None):
        self.model = model if isinstance(model, GuardModel) else GuardModel.load(model)
        if threshold is None and fpr is not None:
            threshold = self.model.operating_point(fpr)
        self.threshold = float(self.model.threshold if threshold is None else threshold)
        if not 0.0 <= self.threshold <= 1.0:
            raise LmsmithError(f"guard threshold {self.threshold} is not in [0, 1]", "pass a probability, e.g. 0.5")
        self.window_words = max(8, int(window_words))
        self.use_rules, self.use_classifier = use_rules, use_classifier
        self.extra_control_tokens = tuple(extra_control_tokens)
        self.languages = languages
        # sentence windows: the model's own setting (stored with its threshold, which was chosen with it)
        self.sentences = bool(self.model.meta.get("sentences", False) if sentences is None else sentences)
        self.control_tokens_flag = control_tokens_flag
        self.strip_controls = bool(self.model.meta.get("ngrams_without_control_tokens", False))
        self.hf = _HFClassifier(hf_model) if hf_model else None
        self.hf_threshold = hf_threshold

    # ------------------------------------------------------------------------------------------ windows
    def windows(self, text: str) -> list[tuple[int, int]]:
        """Word windows (`window_words`, overlapping by half) plus, when `sentences`, each sentence (short
        ones joined to the next) so one injected sentence is also judged without its benign neighbours."""
        return self._word_spans(text) + self._sentence_spans(text)

    def _word_spans(self, text: str) -> list[tuple[int, int]]:
        words = [(m.start(), m.end()) for m in _WORDS.finditer(text)]
        w = self.window_words
        if len(words) <= w:
            return [(0, len(text))]
        step = w // 2
        starts = list(range(0, len(words) - w + 1, step))
        if starts[-1] + w < len(words):
            starts.append(len(words) - w)
        return [(words[s][0], words[s + w - 1][1]) for s in starts]

    def _sentence_spans(self, text: str) -> list[tuple[int, int]]:
        if not self.sentences:
            return []
        sents, start = [], 0
        for m in _SENT_END.finditer(text):
            if len(_WORDS.findall(text[start:m.end()])) >= 4:
                sents.append((start, m.end()))
                start = m.end()
        if start < len(text) and text[start:].strip():
            sents.append((start, len(text)))
        return sents if len(sents) > 1 else []

    def _score_window(self, text: str, span: tuple[int, int], only: set[str] | None = None) -> _Window:
        norm = normalize(text)
        hits = match_rules(norm, self.languages, only) if self.use_rules and only != set() else []
        cats = {h.category for h in hits}
        if self.use_classifier:
            plain = strip_control_tokens(text) if self.strip_controls else text
            ngram = self.model.ngram_logit(normalize(plain) if self.strip_controls else norm, plain)
        else:
            ngram = 0.0
        logit = self.model.bias + ngram + (self.model.rule_logit(cats) if self.use_rules else 0.0)
        return _Window(logit, ngram, cats, [f"{h.category}: {h.snippet}" for h in hits], span, {h.pattern for h in hits})

    def _scan_text(self, text: str, depth: int) -> tuple[_Window, list[str]]:
        """The worst window of `text` (payloads decoded and rescanned) and the encodings that were found."""
        wins = [self._score_window(text[a:b], (a, b)) for a, b in self._word_spans(text)]
        # a sentence lies inside a word window (they overlap by half), so it can only match patterns that
        # matched there: run just those (none, for most benign text); long sentences get every pattern
        fired = set().union(*(w.patterns for w in wins))
        half = self.window_words // 2
        wins += [self._score_window(text[a:b], (a, b), fired if len(_WORDS.findall(text[a:b])) <= half else None)
                 for a, b in self._sentence_spans(text)]
        best = max(wins, key=lambda w: w.logit)
        for w in wins:  # reasons from every window, the score from the worst
            best.categories |= w.categories
            best.snippets += [s for s in w.snippets if s not in best.snippets]
        encodings: list[str] = []
        if depth < 2 and self.use_rules:
            decoded = decode_payloads(text)
            rot = codecs.decode(text, "rot13")
            rot_hits = match_rules(normalize(rot), self.languages)
            if rot_hits or _ROT13_HINT.search(text):
                decoded.append(("rot13", rot))
            for how, dec in decoded:
                inner, _ = self._scan_text(dec, depth + 1)
                logit = inner.logit
                if inner.categories:  # a rule fired inside: an attack hidden in an encoding
                    encodings.append(how)
                    best.categories |= inner.categories | {"encoded_payload"}
                    best.snippets.append(f"{how}: {dec[:80]}")
                    logit += self.model.rule_logit({"encoded_payload"})
                if logit > best.logit:  # the decoded text counts like any other window
                    best.logit, best.ngram_logit = logit, inner.ngram_logit
        return best, encodings

    # ------------------------------------------------------------------------------------------ public
    def scan(self, text: str, id: str | None = None) -> ScanResult:
        if not isinstance(text, str):
            raise LmsmithError(f"record {id}: `text` must be a string, got {type(text).__name__}",
                               "each JSONL record needs {\"id\": ..., \"text\": \"...\"}")
        if not text.strip():
            return ScanResult(id, 0.0, False, [])
        best, encodings = self._scan_text(text, 0)
        controls = count_control_tokens(text, self.extra_control_tokens)
        logit = best.logit
        if controls and self.use_rules:
            best.categories.add("control_tokens")
            logit += self.model.rule_logit({"control_tokens"})
            best.snippets.append("control_tokens: " + ", ".join(f"{k} x{v}" for k, v in controls.items()))
        score = self.model.prob(logit)
        if controls and self.use_rules and self.control_tokens_flag:
            score = max(score, CONTROL_TOKEN_SCORE)  # template markers in data are an attack on the template
        reasons = sorted(best.categories)
        reasons += [f"encoded:{e}" for e in dict.fromkeys(encodings)]
        if self.use_classifier and self.model.prob(self.model.bias + best.ngram_logit) >= self.threshold:
            reasons.append("classifier")
        flagged = score >= self.threshold
        if self.hf is not None:
            p = max(self.hf.prob(text[a:b]) for a, b in self.windows(text))
            if p >= self.hf_threshold:
                flagged = True
                reasons.append("hf_classifier")
            score = max(score, p)
        return ScanResult(id, score, flagged, reasons, dict(controls), best.span, best.snippets)

    def scan_many(self, texts: Iterable[str], ids: Iterable[str | None] | None = None) -> list[ScanResult]:
        texts = list(texts)
        ids = list(ids) if ids is not None else [None] * len(texts)
        return [self.scan(t, i) for t, i in zip(texts, ids)]


class _HFClassifier:
    """Any HF sequence classifier (e.g. a fine-tuned injection detector) given as a ref or a path."""

    def __init__(self, ref: str):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from lmsmith.models import resolve

        path = resolve(ref).dir
        self.tok = AutoTokenizer.from_pretrained(path)
        self.model = AutoModelForSequenceClassification.from_pretrained(path).eval()
        labels = {int(k): str(v).lower() for k, v in (self.model.config.id2label or {}).items()}
        bad = [i for i, name in labels.items() if any(w in name for w in ("inject", "jailbreak", "unsafe", "malicious"))]
        self.index = bad[0] if bad else min(1, self.model.config.num_labels - 1)
        self.torch = torch

    def prob(self, text: str) -> float:
        with self.torch.no_grad():
            enc = self.tok(text, truncation=True, max_length=512, return_tensors="pt")
            logits = self.model(**enc).logits[0]
        return float(logits.softmax(-1)[self.index])


_DEFAULT: Guard | None = None


def default_guard() -> Guard:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Guard()
    return _DEFAULT


def scan_chunks(texts: Iterable[str], guard: Guard | None = None) -> list[ScanResult]:
    """Scan retrieved chunks or tool results before they enter a prompt (RAG calls this): one ScanResult
    per text, in order, with `control_tokens` counted; drop or quarantine those with `flagged`."""
    return (guard or default_guard()).scan_many(texts)


def read_records(path: str | Path, need_label: bool = False) -> list[dict]:
    """JSONL records with `text` (and `id`; with `need_label`, `label`), one clear error per bad line."""
    p = Path(path)
    if not p.exists():
        raise LmsmithError(f"{p} does not exist", "pass a JSONL file with one {\"id\", \"text\"} record per line")
    rows = []
    with open(p, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                r = json.loads(line)
            except json.JSONDecodeError as e:
                raise LmsmithError(f"{p}:{n} is not valid JSON ({e.msg})", "one JSON object per line") from None
            if not isinstance(r, dict) or not isinstance(r.get("text"), str):
                raise LmsmithError(f"{p}:{n} has no string field `text`", "each record needs {\"id\": ..., \"text\": \"...\"}")
            r.setdefault("id", str(n))
            if need_label:
                r["label"] = parse_label(r.get("label"), f"{p}:{n}")
            rows.append(r)
    if not rows:
        raise LmsmithError(f"{p} has no records", "one JSON object per line")
    return rows


_POS = {"1", "true", "yes", "injection", "attack", "malicious", "jailbreak", "unsafe", "positive"}
_NEG = {"0", "false", "no", "benign", "safe", "clean", "negative"}


def parse_label(v, where: str) -> int:
    s = str(v).strip().lower()
    if s in _POS:
        return 1
    if s in _NEG:
        return 0
    raise LmsmithError(f"{where}: label {v!r} is neither an attack nor benign",
                       "use 1/0, true/false or injection/benign")
