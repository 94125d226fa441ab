"""Document quality heuristics in the style of Gopher (Rae et al. 2021) and FineWeb (Penedo et al. 2024).

Each rule is cheap, looks at one document, and has a name: the report counts removals per rule and
keeps examples, so a threshold that removes good text is easy to spot. Thresholds are the papers'
defaults except where noted; every one is configurable.
"""

from __future__ import annotations

import re
from collections import Counter

from pydantic import Field

from lmsmith.config import Config

# Frequent function words per language: real prose contains several of them, boilerplate, lists of
# keywords and machine-generated junk usually don't (Gopher's "stop-word" rule, per language).
STOP_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset("the be to of and that have with a in is it for on as was are this by not you".split()),
    "cs": frozenset("a v se na je že to s z do o i k jsou by ale jak jako pro po od tak ve při který které "
                    "byl bylo jsme není také".split()),
    "sk": frozenset("a v sa na je že to s z do o i k sú by ale ako pre po od tak vo pri ktorý ktoré bol "
                    "bolo sme nie aj".split()),
    "pl": frozenset("i w się na nie z do to że jest o jak a po od za przez dla jego ale tak co są był "
                    "było oraz".split()),
    "sl": frozenset("in je v na se da za z so ki pa s tudi po ne to od kot bi iz so bil bilo smo ali".split()),
    "de": frozenset("der die das und in zu den von ist nicht mit sich des auf für ein eine als auch es".split()),
    "hr": frozenset("i u je na se da za su od s ne to što kao iz ali bi sam".split()),
}

_WORD = re.compile(r"\w+", re.UNICODE)
_TERMINAL = (".", "!", "?", '"', "'", "”", "“", "…", "»", "«", ":", ")")
BULLETS = ("•", "●", "○", "■", "□", "▪", "‣", "–", "-", "*", "·", ">")


class QualityConfig(Config):
    min_words: int = Field(50, description="fewest words in a document")
    max_words: int = Field(100_000, description="most words in a document")
    min_mean_word_length: float = Field(3.0, description="shortest mean word length (characters)")
    max_mean_word_length: float = Field(10.0, description="longest mean word length (characters)")
    max_symbol_word_ratio: float = Field(0.1, description="most '#' and '...' per word")
    max_bullet_lines: float = Field(0.9, description="largest share of lines starting with a bullet")
    max_ellipsis_lines: float = Field(0.3, description="largest share of lines ending with an ellipsis")
    min_alpha_words: float = Field(0.8, description="smallest share of words with a letter in them")
    min_stop_words: int = Field(2, description="fewest stop words of the document's language (0: off)")
    max_dup_line_fraction: float = Field(0.3, description="largest share of lines that repeat")
    max_dup_line_char_fraction: float = Field(0.2, description="largest share of characters in repeated lines")
    max_top_ngram_fraction: float = Field(0.2, description="most characters in the most frequent word 2-gram "
                                          "(3-gram: -0.02, 4-gram: -0.04)")
    max_dup_ngram_fraction: float = Field(0.15, description="most characters in repeated word 5-grams "
                                          "(6..10-grams: 0.01 less each step)")
    min_terminal_punct_lines: float = Field(0.0, description="FineWeb: smallest share of lines ending in "
                                            "punctuation (0.12 in FineWeb; 0: off)")


def _words(text: str) -> list[str]:
    return text.split()


def _ngram_char_fraction_top(words: list[str], n: int, total_chars: int) -> float:
    grams = Counter(tuple(words[i:i + n]) for i in range(len(words) - n + 1))
    if not grams:
        return 0.0
    gram, count = grams.most_common(1)[0]
    if count < 2:
        return 0.0
    return sum(len(w) for w in gram) * count / max(total_chars, 1)


def _ngram_char_fraction_dup(words: list[str], n: int, total_chars: int) -> float:
    """Share of word characters covered by n-grams that occur more than once (each word counted once)."""
    if len(words) < n:
        return 0.0
    seen: dict[tuple[str, ...], int] = {}
    covered = bytearray(len(words))
    for i in range(len(words) - n + 1):
        g = tuple(words[i:i + n])
        first = seen.setdefault(g, i)
        if first != i:
            covered[first:first + n] = b"\x01" * n
            covered[i:i + n] = b"\x01" * n
    if not any(covered):
        return 0.0
    return sum(len(w) for w, c in zip(words, covered) if c) / max(total_chars, 1)


def quality_reason(text: str, lang: str | None, cfg: QualityConfig) -> str | None:
    """The name of the first rule the document fails, or None when it passes all of them."""
    words = _words(text)
    n = len(words)
    if n < cfg.min_words:
        return "too_few_words"
    if n > cfg.max_words:
        return "too_many_words"
    word_chars = sum(len(w) for w in words)
    mean_len = word_chars / n
    if not cfg.min_mean_word_length <= mean_len <= cfg.max_mean_word_length:
        return "mean_word_length"
    if (text.count("#") + text.count("...") + text.count("…")) / n > cfg.max_symbol_word_ratio:
        return "symbol_word_ratio"
    lines = [ln.strip() for ln in text.split("\n") if ln.strip()]
    if lines:
        if sum(ln.startswith(BULLETS) for ln in lines) / len(lines) > cfg.max_bullet_lines:
            return "bullet_lines"
        if sum(ln.endswith(("...", "…")) for ln in lines) / len(lines) > cfg.max_ellipsis_lines:
            return "ellipsis_lines"
    if sum(any(c.isalpha() for c in w) for w in words) / n < cfg.min_alpha_words:
        return "alpha_words"
    if cfg.min_stop_words and lang in STOP_WORDS:
        stops = STOP_WORDS[lang]
        found = 0
        for w in words:
            if w.lower().strip(".,;:!?\"'()«»„“”") in stops:
                found += 1
                if found >= cfg.min_stop_words:
                    break
        if found < cfg.min_stop_words:
            return "stop_words"
    if len(lines) > 1:
        counts = Counter(lines)
        dup_lines = [ln for ln in lines if counts[ln] > 1]
        if len(dup_lines) / len(lines) > cfg.max_dup_line_fraction:
            return "dup_lines"
        if sum(map(len, dup_lines)) / max(sum(map(len, lines)), 1) > cfg.max_dup_line_char_fraction:
            return "dup_line_chars"
    lowered = [w.lower() for w in words]
    for k, n_gram in enumerate((2, 3, 4)):
        if _ngram_char_fraction_top(lowered, n_gram, word_chars) > cfg.max_top_ngram_fraction - 0.02 * k:
            return f"top_{n_gram}gram"
    # Covered characters shrink as n grows (a repeated (n+1)-gram contains a repeated n-gram), so when
    # 5-grams stay under the smallest threshold, longer n-grams cannot fail: skip them.
    lowest = cfg.max_dup_ngram_fraction - 0.05
    for k, n_gram in enumerate(range(5, 11)):
        frac = _ngram_char_fraction_dup(lowered, n_gram, word_chars)
        if frac > cfg.max_dup_ngram_fraction - 0.01 * k:
            return f"dup_{n_gram}gram"
        if frac <= lowest:
            break
    if cfg.min_terminal_punct_lines and lines:
        if sum(ln.endswith(_TERMINAL) for ln in lines) / len(lines) < cfg.min_terminal_punct_lines:
            return "terminal_punct_lines"
    return None
