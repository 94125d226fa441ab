"""What `lmsmith data clean` reports: documents and characters in and out per step and language, removal
reasons with examples (`Tally`), warnings for a filter that removed most of a corpus, and report.md."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from lmsmith.data.clean_config import STEPS


class Tally:
    """Documents and characters in/out per step and per language, plus removal reasons and examples."""

    def __init__(self, examples: int = 3):
        self.examples = examples
        self.steps: dict[str, Counter] = defaultdict(Counter)
        self.langs: dict[str, dict[str, Counter]] = defaultdict(lambda: defaultdict(Counter))
        self.reasons: dict[str, Counter] = defaultdict(Counter)
        self.samples: dict[str, list[dict]] = defaultdict(list)
        self.pii: Counter = Counter()

    def record(self, step: str, lang: str, chars_in: int, chars_out: int | None, reason: str | None = None,
               doc_id: str = "", text: str = "", detail: str = "") -> None:
        kept = chars_out is not None
        for c in (self.steps[step], self.langs[lang][step]):
            c["docs_in"] += 1
            c["chars_in"] += chars_in
            c["docs_out"] += kept
            c["chars_out"] += chars_out or 0
        if not kept:
            reason = reason or step
            self.reasons[step][reason] += 1
            key = f"{step}:{reason}"
            if len(self.samples[key]) < self.examples and text:
                self.samples[key].append({"id": doc_id, "lang": lang, "detail": detail, "text": snippet(text)})

    def to_dict(self) -> dict:
        return {"steps": {k: dict(v) for k, v in self.steps.items()},
                "langs": {lang: {s: dict(c) for s, c in v.items()} for lang, v in self.langs.items()},
                "reasons": {k: dict(v) for k, v in self.reasons.items()},
                "samples": dict(self.samples), "pii": dict(self.pii)}

    def merge(self, d: dict) -> None:
        for step, c in d["steps"].items():
            self.steps[step].update(c)
        for lang, steps in d["langs"].items():
            for step, c in steps.items():
                self.langs[lang][step].update(c)
        for step, c in d["reasons"].items():
            self.reasons[step].update(c)
        for key, items in d["samples"].items():
            room = self.examples - len(self.samples[key])
            self.samples[key].extend(items[:max(room, 0)])
        self.pii.update(d["pii"])


def snippet(text: str, n: int = 300) -> str:
    text = text.replace("\n", " ")
    return text if len(text) <= n else text[:n] + " …"


# the option to loosen when one reason removes most of a corpus
REASON_FLAGS = {"too_few_words": "--min-words", "too_many_words": "--max-words", "mean_word_length":
                "--min-mean-word-length/--max-mean-word-length", "stop_words": "--min-stop-words",
                "alpha_words": "--min-alpha-words", "terminal_punct_lines": "--min-terminal-punct-lines",
                "dup_lines": "--max-dup-line-fraction", "dup_line_chars": "--max-dup-line-char-fraction",
                "symbol_word_ratio": "--max-symbol-word-ratio", "bullet_lines": "--max-bullet-lines",
                "ellipsis_lines": "--max-ellipsis-lines"}


def heavy_filters(report: dict[str, Any], share: float = 0.5) -> list[str]:
    """One line per step that removed more than `share` of the documents in, naming its main reason."""
    out = []
    n = max(report["documents_in"], 1)
    for step, c in report["steps"].items():
        removed = c.get("docs_in", 0) - c.get("docs_out", 0)
        if removed / n > share:
            reasons = report["reasons"].get(step, {})
            top, count = max(reasons.items(), key=lambda kv: kv[1]) if reasons else (step, removed)
            flag = REASON_FLAGS.get(top)
            out.append(f"{step} removed {removed / n:.0%} of the documents (mostly '{top}': {count:,})"
                       + (f"; if your texts are short or unusual, loosen {flag}" if flag else "")
                       + "; examples in report.md")
    return out


def report_markdown(r: dict) -> str:
    lines = ["# Cleaning report", "",
             f"{r['documents_in']:,} documents in, {r['documents_out']:,} out, {r['seconds']} s "
             f"({r['docs_per_second']} docs/s, {r['workers']} workers; {r['chunks_resumed']} of {r['chunks']} "
             "chunks resumed).", "", "## Steps", "",
             "| step | docs in | docs out | removed | chars in | chars out |", "|---|---:|---:|---:|---:|---:|"]
    for step in STEPS:
        c = r["steps"].get(step)
        if c:
            lines.append(f"| {step} | {c.get('docs_in', 0):,} | {c.get('docs_out', 0):,} | "
                         f"{c.get('docs_in', 0) - c.get('docs_out', 0):,} | {c.get('chars_in', 0):,} | "
                         f"{c.get('chars_out', 0):,} |")
    lines += ["", "## Per language (documents in -> out per step)", "",
              "| lang | " + " | ".join(s for s in STEPS) + " |", "|---|" + "---:|" * len(STEPS)]
    for lang, steps in sorted(r["langs"].items(), key=lambda kv: -kv[1].get("normalize", {}).get("docs_in", 0)):
        cells = [f"{steps[s].get('docs_in', 0)}->{steps[s].get('docs_out', 0)}" if s in steps else "" for s in STEPS]
        lines.append(f"| {lang} | " + " | ".join(cells) + " |")
    lines += ["", "## Removal reasons", ""]
    for step, reasons in r["reasons"].items():
        lines.append(f"- **{step}**: " + ", ".join(f"{k} {v:,}" for k, v in sorted(reasons.items(), key=lambda kv: -kv[1])))
    if r.get("pii"):
        lines += ["", "## PII replaced", "", ", ".join(f"{k}: {v:,}" for k, v in r["pii"].items())]
    if r.get("near_dedup"):
        nd = r["near_dedup"]
        lines += ["", "## Near-duplicate clusters", "",
                  f"{nd['clusters']:,} clusters, {nd['removed']:,} documents removed, largest cluster "
                  f"{nd['largest']} (threshold {nd['threshold']}, {nd['bands']} bands x {nd['rows']} rows)."]
    lines += ["", "## Examples of removed documents", ""]
    for key, items in r["samples"].items():
        lines.append(f"### {key}")
        for e in items:
            detail = f" ({e['detail']})" if e.get("detail") else ""
            lines.append(f"- `{e['id']}` [{e['lang']}]{detail}: {e['text']}")
            if e.get("kept_twin"):
                lines.append(f"  - kept instead: {e['kept_twin']}")
        lines.append("")
    return "\n".join(lines) + "\n"
