"""Tokenizer tools for a new language: fertility, training a byte-level BPE, extending a model's vocabulary.

`extend` continues BPE training from where the model's tokenizer stopped: the target corpus is
pre-tokenized and segmented by the old tokenizer, and new merges are learned on top of those
segmentations. The merges are appended after all old ones (lowest priority), so the old merges always
run to completion first: a word changes only if one of the new merges fires on its old segmentation.
Merges that would fire on a protected text (English, by default the model's own language) are never
learned, and a merge whose result is already an old token is skipped, so old ids never change and
protected text tokenizes exactly as before. New embedding rows start as the mean of the old pieces'
embeddings (or the plain mean of all rows); old rows, and with them old-token logits for old inputs,
stay bit-identical.
"""

from __future__ import annotations

import gzip
import heapq
import json
import re
import shutil
import tempfile
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from lmsmith.errors import LmsmithError
from lmsmith.registry.store import sha256_file as _sha256

_WORD = re.compile(r"\w+", re.UNICODE)
DEFAULT_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<tool_call>", "</tool_call>",
                    "<tool_response>", "</tool_response>"]


# ----------------------------------------------------------------------------- loading


def read_texts(path: str | Path, max_chars: int | None = None, text_field: str = "text") -> list[str]:
    """Documents of a .txt (paragraphs) or .jsonl[.gz] (`text` field) file, up to `max_chars` in all."""
    p = Path(path)
    if p.is_dir():
        raise LmsmithError(f"{p} is a directory", "pass one .txt or .jsonl file")
    if not p.is_file():
        raise LmsmithError(f"text file not found: {p}", "pass a .txt or .jsonl file")
    opener = gzip.open if p.suffix == ".gz" else open
    texts: list[str] = []
    total = 0
    with opener(p, "rt", encoding="utf-8", errors="replace") as f:
        if ".jsonl" in p.name:
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    raise LmsmithError(f"{p}:{lineno}: not valid JSON ({e.msg} at column {e.colno})",
                                       "fix or remove that line") from None
                t = rec.get(text_field) if isinstance(rec, dict) else None
                if not isinstance(t, str):
                    raise LmsmithError(f"{p}:{lineno}: expected a JSON object with a string '{text_field}' field") from None
                texts.append(t)
                total += len(t)
                if max_chars and total >= max_chars:
                    break
        else:
            texts = [t for t in re.split(r"\n\s*\n", f.read(max_chars or -1)) if t.strip()]
    if not texts:
        raise LmsmithError(f"{p} holds no text")
    return texts


def load_any_tokenizer(spec: str):
    """A tokenizer from a tokenizer.json file, a directory, or a registered model ref."""
    from lmsmith.models import has_tokenizer, load_tokenizer
    from lmsmith.runtime import quiet_transformers

    quiet_transformers()
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    p = Path(spec)
    if p.is_file() and p.suffix == ".json":
        return PreTrainedTokenizerFast(tokenizer_file=str(p))
    if p.is_dir():
        if not has_tokenizer(p):
            raise LmsmithError(f"{p} holds no tokenizer files", "pass a model directory or tokenizer.json")
        return AutoTokenizer.from_pretrained(p)
    return load_tokenizer(spec)


def tokenizer_name(spec: str) -> str:
    p = Path(spec)
    if p.suffix == ".json":
        return p.parent.name or p.stem
    return p.name if p.exists() else spec


# ----------------------------------------------------------------------------- fertility


def fertility(tok, text: str) -> dict[str, float]:
    """Tokens per whitespace word, characters and UTF-8 bytes per token, and the share of word
    occurrences (\\w+ runs, with a leading space as in running text) split into 3 or more tokens."""
    words = text.split()
    if not words:
        raise LmsmithError("the text sample is empty")
    n_tok = sum(len(tok.encode(t, add_special_tokens=False)) for t in text.split("\n\n"))
    n_tok += text.count("\n\n")  # the separators we split on
    counts = Counter(_WORD.findall(text))
    uniq = list(counts)
    lengths = [len(ids) for ids in tok([" " + w for w in uniq], add_special_tokens=False)["input_ids"]]
    occ = sum(counts.values())
    split3 = sum(counts[w] for w, n in zip(uniq, lengths) if n >= 3) / max(occ, 1)
    return {"tokens_per_word": n_tok / len(words), "chars_per_token": len(text) / max(n_tok, 1),
            "bytes_per_token": len(text.encode()) / max(n_tok, 1), "split3_share": split3}


def fertility_rows(tokenizers: list[str], texts: dict[str, str]) -> list[dict]:
    rows = []
    for spec in tokenizers:
        tok = load_any_tokenizer(spec)
        for lang, text in texts.items():
            rows.append({"tokenizer": tokenizer_name(spec), "lang": lang,
                         **{k: round(v, 4) for k, v in fertility(tok, text).items()}})
    return rows


def plot_fertility(rows: list[dict], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    toks = list(dict.fromkeys(r["tokenizer"] for r in rows))
    langs = list(dict.fromkeys(r["lang"] for r in rows))
    val = {(r["tokenizer"], r["lang"]): r["tokens_per_word"] for r in rows}
    x = np.arange(len(langs))
    width = 0.8 / max(len(toks), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(langs) * max(1, len(toks) / 2)), 4))
    for i, t in enumerate(toks):
        ys = [val.get((t, lang), 0) for lang in langs]
        bars = ax.bar(x + (i - (len(toks) - 1) / 2) * width, ys, width, label=t)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(x, langs)
    ax.set_ylabel("tokens per word (lower is better)")
    ax.set_title("Tokenizer fertility")
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------- train


def train_tokenizer(corpus: list[str | Path], output: str | Path, vocab_size: int = 32000, min_frequency: int = 2,
                    special_tokens: list[str] | None = None, bos: str = "<|im_start|>", eos: str = "<|im_end|>",
                    pad: str = "<|endoftext|>", unk: str | None = None, max_chars: int | None = None) -> Path:
    """Byte-level BPE (GPT-2 pre-tokenizer, digits split) with special tokens and a ChatML+tools chat
    template, saved as a HF tokenizer directory."""
    from lmsmith.data.chat import CHAT_TEMPLATE
    from lmsmith.runtime import quiet_transformers

    quiet_transformers()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = list(dict.fromkeys((special_tokens or DEFAULT_SPECIALS) + [t for t in (bos, eos, pad) if t]))
    if vocab_size < 256 + len(specials) + 1:
        raise LmsmithError(f"--vocab-size {vocab_size} is too small", "a byte-level BPE needs at least 256 + specials")
    texts: list[str] = []
    for f in corpus:
        texts += read_texts(f, max_chars)
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tk.train_from_iterator(texts, trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token=bos, eos_token=eos, pad_token=pad,
                                  unk_token=unk)
    if "<|im_start|>" in specials and "<|im_end|>" in specials:
        tok.chat_template = CHAT_TEMPLATE  # ChatML with tool calls, as the default model family uses
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(out)
    return out


# ----------------------------------------------------------------------------- extend


@dataclass
class LearnedMerges:
    merges: list[tuple[str, str]]  # in rank order, appended after the old merges
    new_tokens: list[str]  # merge results that are new vocabulary entries
    pieces: dict[str, list[str]]  # new token -> the old tokens it is made of


def _pretokenize(backend, texts: Iterable[str]) -> Counter:
    words: Counter = Counter()
    norm = backend.normalizer
    for text in texts:
        if norm is not None:
            text = norm.normalize_str(text)
        words.update(piece for piece, _ in backend.pre_tokenizer.pre_tokenize_str(text))
    return words


def learn_merges(backend, corpus: list[str], num_tokens: int, protect: list[str] | None = None,
                 min_frequency: int = 2) -> LearnedMerges:
    """Greedy BPE on top of the old segmentations (incremental pair counts, lazy max-heap)."""
    vocab = backend.get_vocab()
    model = backend.model
    word_counts = _pretokenize(backend, corpus)
    words = [[t.value for t in model.tokenize(w)] for w in word_counts]
    freqs = list(word_counts.values())
    forbidden: set[tuple[str, str]] = set()
    for w in _pretokenize(backend, protect or []):
        segs = [t.value for t in model.tokenize(w)]
        forbidden.update(zip(segs, segs[1:]))

    counts: Counter = Counter()
    where: dict[tuple[str, str], set[int]] = defaultdict(set)
    for i, (syms, f) in enumerate(zip(words, freqs)):
        for pair in zip(syms, syms[1:]):
            counts[pair] += f
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[str, str]] = []
    new_tokens: list[str] = []
    pieces: dict[str, list[str]] = {}
    known = set(vocab)
    while len(new_tokens) < num_tokens and heap:
        negc, pair = heapq.heappop(heap)
        c = counts.get(pair, 0)
        if -negc != c:
            if c > 0:
                heapq.heappush(heap, (-c, pair))
            continue
        if c < min_frequency:
            break
        a, b = pair
        merged = a + b
        if pair in forbidden or merged in known:
            counts.pop(pair, None)
            continue
        merges.append(pair)
        new_tokens.append(merged)
        known.add(merged)
        pieces[merged] = pieces.get(a, [a]) + pieces.get(b, [b])
        changed: Counter = Counter()
        for i in list(where.pop(pair, ())):
            syms, f = words[i], freqs[i]
            for p in zip(syms, syms[1:]):
                changed[p] -= f
            out, j = [], 0
            while j < len(syms):
                if j < len(syms) - 1 and syms[j] == a and syms[j + 1] == b:
                    out.append(merged)
                    j += 2
                else:
                    out.append(syms[j])
                    j += 1
            words[i] = out
            for p in zip(out, out[1:]):
                changed[p] += f
                where[p].add(i)
        counts.pop(pair, None)
        for p, d in changed.items():
            if d:
                counts[p] += d
                if counts[p] > 0:
                    heapq.heappush(heap, (-counts[p], p))
                else:
                    counts.pop(p, None)
    return LearnedMerges(merges, new_tokens, pieces)


def extend_tokenizer_json(tok_json: dict, learned: LearnedMerges, first_id: int) -> dict[str, int]:
    """Append the learned merges and tokens to a tokenizer.json dict in place; returns new token ids."""
    model = tok_json["model"]
    if model.get("type") != "BPE":
        raise LmsmithError(f"cannot extend a {model.get('type')} tokenizer", "extend supports byte-level BPE tokenizers")
    ids = {}
    for k, t in enumerate(learned.new_tokens):
        ids[t] = first_id + k
        model["vocab"][t] = ids[t]
    string_merges = bool(model["merges"]) and isinstance(model["merges"][0], str)
    for a, b in learned.merges:
        model["merges"].append(f"{a} {b}" if string_merges else [a, b])
    return ids



def extend_model(ref: str, corpus: str | Path, num_tokens: int, output_name: str, init: str = "pieces",
                 protect: str | Path | None = None, min_frequency: int = 2, eval_text: str | Path | None = None,
                 command: str | None = None, max_chars: int | None = 20_000_000):
    """Learn `num_tokens` new tokens from `corpus`, resize and initialize the embeddings of model `ref`,
    and register the result as a new version of `output_name` with lineage. Returns (version, stats)."""
    import torch

    from lmsmith.models import load_model, resolve_model
    from lmsmith.progress import console
    from lmsmith.registry import DataRef, Lineage

    if num_tokens < 1:
        raise LmsmithError("--num-tokens must be at least 1")
    if init not in ("pieces", "mean"):
        raise LmsmithError(f"unknown --init '{init}'", "use pieces (mean of the old pieces) or mean (mean of all rows)")
    source = resolve_model(ref)
    registry, handle = source.registry, source.handle
    if source.is_adapter:
        raise LmsmithError(f"{ref} is an adapter", "merge it first, or extend its base model")
    tdir = source.tokenizer_dir
    if not (tdir / "tokenizer.json").exists():
        raise LmsmithError(f"{ref} has no tokenizer.json (fast tokenizer)", "extend needs a HF fast BPE tokenizer")
    from tokenizers import Tokenizer

    tok_json = json.loads((tdir / "tokenizer.json").read_text())
    backend = Tokenizer.from_str(json.dumps(tok_json))
    texts = read_texts(corpus, max_chars)
    protect_texts = read_texts(protect) if protect else []
    with console.status(f"learning {num_tokens} new tokens from {corpus} …"):
        learned = learn_merges(backend, texts, num_tokens, protect_texts, min_frequency)
    if not learned.new_tokens:
        raise LmsmithError("no new token shortens the corpus", "use a larger corpus or a lower --min-frequency")
    if len(learned.new_tokens) < num_tokens:
        console.print(f"[yellow]only {len(learned.new_tokens)} tokens occur at least {min_frequency} times; "
                      "adding those")

    model = load_model(source, dtype="float32", device="cpu")
    saved_dtype = json.loads((handle.dir / "config.json").read_text()).get("dtype") or \
        json.loads((handle.dir / "config.json").read_text()).get("torch_dtype") or "float32"
    emb = model.get_input_embeddings().weight
    old_rows = emb.shape[0]
    old_vocab = backend.get_vocab(with_added_tokens=True)
    first_id = max(max(old_vocab.values()) + 1, old_rows)
    new_ids = extend_tokenizer_json(tok_json, learned, first_id)
    new_rows = first_id + len(learned.new_tokens)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    model.resize_token_embeddings(new_rows, mean_resizing=False)
    emb = model.get_input_embeddings().weight
    out_w = model.get_output_embeddings().weight if model.get_output_embeddings() is not None else None
    with torch.no_grad():
        if first_id > old_rows:  # ids between the old rows and the first new token stay unused: zero them
            emb[old_rows:first_id] = 0
        mats = [emb] + ([out_w] if out_w is not None and out_w.data_ptr() != emb.data_ptr() else [])
        for w in mats:
            mean_all = w[:old_rows].mean(0)
            for t, i in new_ids.items():
                if init == "mean":
                    w[i] = mean_all
                else:
                    piece_ids = [old_vocab[p] for p in learned.pieces[t]]
                    w[i] = w[piece_ids].mean(0)
    with tempfile.TemporaryDirectory(prefix="lmsmith-extend-") as tmp:
        out = Path(tmp) / output_name
        model.to(getattr(torch, saved_dtype) if isinstance(saved_dtype, str) and hasattr(torch, saved_dtype)
                 else torch.float32)
        model.save_pretrained(out)
        for f in tdir.iterdir():
            if f.is_file() and (f.name.startswith(("tokenizer", "special_tokens", "chat_template", "added_tokens",
                                                   "vocab", "merges"))):
                shutil.copy2(f, out / f.name)
        (out / "tokenizer.json").write_text(json.dumps(tok_json, ensure_ascii=False))
        for stale in ("vocab.json", "merges.txt"):  # the slow-tokenizer files would disagree with tokenizer.json
            (out / stale).unlink(missing_ok=True)
        stats = extension_stats(tdir, out, texts, eval_text, protect_texts)
        stats.update({"new_tokens": len(learned.new_tokens), "new_merges": len(learned.merges), "init": init,
                      "vocab_before": old_rows, "vocab_after": new_rows, "tied_embeddings": tied})
        corpus_p = Path(corpus)
        mv = registry.register(out, output_name, lineage=Lineage(
            parent=handle.ref, stage="extend", command=command,
            data=[DataRef(path=str(corpus_p.resolve()), sha256=_sha256(corpus_p), size=corpus_p.stat().st_size)],
            config={"num_tokens": num_tokens, "init": init, "min_frequency": min_frequency,
                    "protect": str(protect) if protect else None}),
            metrics={k: v for k, v in stats.items() if isinstance(v, (int, float)) and not isinstance(v, bool)},
            tags={"extended_from": handle.ref})
    return mv, stats


def extension_stats(old_dir: Path, new_dir: Path, corpus: list[str], eval_text: str | Path | None,
                    protect: list[str]) -> dict:
    """Fertility before/after on the corpus and the held-out text; protected text must not change."""
    from transformers import AutoTokenizer

    old = AutoTokenizer.from_pretrained(old_dir)
    new = AutoTokenizer.from_pretrained(new_dir)
    sample = "\n\n".join(corpus)[:200_000]
    stats = {"corpus_tokens_per_word_before": fertility(old, sample)["tokens_per_word"],
             "corpus_tokens_per_word_after": fertility(new, sample)["tokens_per_word"]}
    if eval_text:
        held = "\n\n".join(read_texts(eval_text))
        b, a = fertility(old, held)["tokens_per_word"], fertility(new, held)["tokens_per_word"]
        stats.update({"eval_tokens_per_word_before": b, "eval_tokens_per_word_after": a,
                      "eval_reduction": 1 - a / b})
    if protect:
        text = "\n\n".join(protect)
        same = old.encode(text, add_special_tokens=False) == new.encode(text, add_special_tokens=False)
        if not same:
            raise LmsmithError("the protected text tokenizes differently after extension (a bug)",
                               "report it with the tokenizer and the protected file")
        stats["protected_text_unchanged"] = True
    return stats


def add_special_tokens(ref: str, tokens: list[str], output_name: str, command: str | None = None):
    """Add `tokens` as special tokens (single ids, never split) to model `ref`: new embedding rows are the
    mean of the old ones, so the model is unchanged on every old input; fine-tune it to use them.
    Registers the result with lineage. Returns (version, the tokens that were new)."""
    import torch

    from lmsmith.models import load_model, load_tokenizer, resolve
    from lmsmith.registry.registry import Lineage, Registry

    tokens = [t for t in dict.fromkeys(t.strip() for t in tokens) if t]
    if not tokens:
        raise LmsmithError("no tokens given", "pass --tokens '<tool_call>,</tool_call>'")
    registry = Registry()
    handle = resolve(ref, registry)
    if handle.kind == "adapter":
        raise LmsmithError(f"{ref} is an adapter", "merge it first, or add the tokens to its base model")
    tok = load_tokenizer(ref, registry)
    vocab = tok.get_vocab()
    new = [t for t in tokens if t not in vocab]
    if not new:
        raise LmsmithError(f"{ref} already has {', '.join(tokens)}", "check it with `lmsmith tokenizer check`")
    tok.add_tokens(new, special_tokens=True)
    config = json.loads((handle.dir / "config.json").read_text())
    saved_dtype = config.get("dtype") or config.get("torch_dtype") or "float32"
    model = load_model(ref, dtype="float32", device="cpu", registry=registry)
    old_rows = model.get_input_embeddings().weight.shape[0]
    rows = max(old_rows, len(tok))
    if rows > old_rows:
        model.resize_token_embeddings(rows, mean_resizing=False)
        with torch.no_grad():
            out_emb = model.get_output_embeddings()
            for w in [model.get_input_embeddings().weight] + ([out_emb.weight] if out_emb is not None else []):
                w[old_rows:] = w[:old_rows].mean(0)
    with tempfile.TemporaryDirectory(prefix="lmsmith-special-") as tmp:
        out = Path(tmp) / output_name
        model.to(getattr(torch, saved_dtype) if hasattr(torch, str(saved_dtype)) else torch.float32)
        model.save_pretrained(out)
        tok.save_pretrained(out)
        mv = registry.register(out, output_name, tags={"special_tokens_added": ",".join(new)}, lineage=Lineage(
            parent=handle.ref, stage="add-special-tokens", command=command, config={"tokens": new}))
    return mv, new
