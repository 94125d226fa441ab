"""Data formats for the loop: each turns `--data` into indexable train/eval datasets plus a collate function.

A format is any `DataSpec` (a dataset of rows, a collate that makes model-ready batches, what to record
as lineage). The loop only sees `Loader`s, so new formats (preference pairs for DPO, reward data) plug in
without touching it. `Loader` iterates in a seeded per-epoch order and its position (epoch, index) is
saved in checkpoints, which makes resuming exact.
"""

from __future__ import annotations

import queue
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch

from lmsmith.data.chat import IGNORE_INDEX, ChatExample, check_chat_template, read_chat_jsonl, render_file
from lmsmith.data.corpus import TokenCorpus, file_sha256, resolve_files, tokenize_corpus
from lmsmith.data.packing import PackedRows, collate_packed
from lmsmith.data.preference import PairExample, prompt_ids, read_pairs, read_prompts, render_pair
from lmsmith.errors import LmsmithError
from lmsmith.progress import console
from lmsmith.registry.registry import DataRef
from lmsmith.train.config import TrainConfig


@dataclass
class DataSpec:
    train: Sequence[Any]
    eval: Sequence[Any] | None
    collate: Callable[[list[Any]], dict[str, torch.Tensor]]
    refs: list[DataRef]
    stats: dict[str, Any] = field(default_factory=dict)


class Loader:
    """Deterministic batches: epoch e visits rows in `randperm(seed + e)`; position = (epoch, index)."""

    def __init__(self, dataset: Sequence[Any], batch_size: int, collate: Callable, seed: int, shuffle: bool = True):
        if len(dataset) == 0:
            raise LmsmithError("the training set is empty", "add data, or lower --seq-len / --eval-fraction")
        self.dataset, self.batch_size, self.collate, self.seed, self.shuffle = dataset, batch_size, collate, seed, shuffle
        self.epoch, self.index = 0, 0
        self._order = self._make_order()

    def _make_order(self) -> list[int]:
        if not self.shuffle:
            return list(range(len(self.dataset)))
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return torch.randperm(len(self.dataset), generator=g).tolist()

    def batches_per_epoch(self) -> int:
        return max(1, -(-len(self.dataset) // self.batch_size))

    def next(self) -> dict[str, torch.Tensor]:
        if self.index >= len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._make_order()
        ids = self._order[self.index:self.index + self.batch_size]
        self.index += len(ids)
        return self.collate([self.dataset[i] for i in ids])

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state(self, s: dict[str, int]) -> None:
        self.epoch, self.index = int(s["epoch"]), int(s["index"])
        self._order = self._make_order()


class Prefetcher:
    """Prepares the next `depth` batches of a Loader in a background thread (collate, then pin_memory so
    the host-to-device copy can run asynchronously) while the GPU computes the current step.

    `state()` and `epoch` describe the batches handed out, not the ones prepared ahead, so a checkpoint
    resumes exactly where training was. depth=0 prepares batches in the caller's thread."""

    def __init__(self, loader: Loader, depth: int = 2, pin: bool = False):
        self.loader, self.depth, self.pin = loader, depth, pin
        self._state = loader.state()
        self._queue: queue.Queue | None = None
        self._stop: threading.Event | None = None
        self._thread: threading.Thread | None = None

    def _prepare(self) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
        batch = self.loader.next()
        if self.pin:
            batch = {k: v.pin_memory() for k, v in batch.items()}
        return batch, self.loader.state()

    def _work(self, q: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                item: Any = self._prepare()
            except BaseException as e:  # handed to the consumer, raised in its thread
                item = e
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def next(self) -> dict[str, torch.Tensor]:
        if self.depth <= 0:
            batch, self._state = self._prepare()
            return batch
        if self._thread is None:
            self._queue, self._stop = queue.Queue(maxsize=self.depth), threading.Event()
            self._thread = threading.Thread(target=self._work, args=(self._queue, self._stop), daemon=True,
                                            name="lmsmith-prefetch")
            self._thread.start()
        assert self._queue is not None
        item = self._queue.get()
        if isinstance(item, BaseException):
            self.close()
            raise item
        batch, self._state = item
        return batch

    @property
    def epoch(self) -> int:
        return int(self._state["epoch"])

    def state(self) -> dict[str, int]:
        return dict(self._state)

    def load_state(self, s: dict[str, int]) -> None:
        self.close()
        self.loader.load_state(s)
        self._state = self.loader.state()

    def batches_per_epoch(self) -> int:
        return self.loader.batches_per_epoch()

    def close(self) -> None:
        """Stop the worker; the wrapped loader is left at the position of the last batch handed out."""
        if self._thread is not None and self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=5)
            self.loader.load_state(self._state)
        self._thread = self._queue = self._stop = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def iterate_eval(dataset: Sequence[Any], batch_size: int, collate: Callable, max_batches: int):
    for b in range(min(max_batches, -(-len(dataset) // batch_size))):
        yield collate([dataset[i] for i in range(b * batch_size, min(len(dataset), (b + 1) * batch_size))])


def data_refs(specs: list[str]) -> list[DataRef]:
    return [DataRef(path=str(f.resolve()), sha256=file_sha256(f), size=f.stat().st_size) for f in resolve_files(specs)]


# ------------------------------------------------------------------ pretraining: packed text
def packed_text(cfg: TrainConfig, tokenizer: Any) -> DataSpec:
    corpus = tokenize_corpus(cfg.data, tokenizer, workers=cfg.workers, skip_bad_lines=cfg.skip_bad_lines)
    rows = _rows(corpus, cfg)
    if len(rows) == 0:
        raise LmsmithError(f"the corpus has {corpus.n_tokens} tokens, fewer than one sequence of --seq-len {cfg.seq_len}",
                           "add data or lower --seq-len")
    if cfg.eval_data:
        train, held = rows, _rows(tokenize_corpus(cfg.eval_data, tokenizer, workers=cfg.workers,
                                                  skip_bad_lines=cfg.skip_bad_lines), cfg)
    elif cfg.eval_fraction > 0 and len(rows) >= 2:
        n_eval = max(1, int(round(len(rows) * cfg.eval_fraction)))
        train, held = rows.split(n_eval)
    else:
        train, held = rows, None
    refs = [DataRef(path=f["path"], sha256=f["sha256"], size=f["size"]) for f in corpus.meta["files"]]
    stats = {"tokens": corpus.n_tokens, "documents": corpus.n_docs, "train_rows": len(train),
             "eval_rows": len(held) if held is not None else 0, "bad_lines": corpus.meta.get("bad_lines", 0)}
    return DataSpec(train, held, collate_packed, refs, stats)


def _rows(corpus: TokenCorpus, cfg: TrainConfig) -> PackedRows:
    return PackedRows(corpus.tokens, corpus.doc_starts, cfg.seq_len, cfg.cross_doc_attention)


# ------------------------------------------------------------------ SFT: chat conversations
class ChatRows:
    def __init__(self, examples: list[ChatExample]):
        self.examples = examples

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> ChatExample:
        return self.examples[i]


def collate_chat(pad_id: int) -> Callable[[list[ChatExample]], dict[str, torch.Tensor]]:
    def collate(rows: list[ChatExample]) -> dict[str, torch.Tensor]:
        t = max(len(r) for r in rows)
        ids = torch.full((len(rows), t), pad_id, dtype=torch.long)
        labels = torch.full((len(rows), t), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(rows), t), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = torch.tensor(r.input_ids)
            labels[i, :len(r)] = torch.tensor(r.labels)
            mask[i, :len(r)] = 1
        return {"input_ids": ids, "labels": labels, "attention_mask": mask}
    return collate


def chat_data(cfg: TrainConfig, tokenizer: Any) -> DataSpec:
    check_chat_template(tokenizer, cfg.tokenizer or cfg.model or "the model")
    files = resolve_files(cfg.data)
    examples: list[ChatExample] = []
    counts = {"examples": 0, "truncated": 0, "dropped": 0, "bad_lines": 0}
    for f in files:
        ex, c = render_file(tokenizer, read_chat_jsonl(f, cfg.skip_bad_lines), cfg.seq_len, cfg.too_long)
        examples += ex
        for k in counts:
            counts[k] += c[k]
    eval_examples: list[ChatExample] | None = None
    if cfg.eval_data:
        eval_examples = []
        for f in resolve_files(cfg.eval_data):
            eval_examples += render_file(tokenizer, read_chat_jsonl(f, cfg.skip_bad_lines), cfg.seq_len, cfg.too_long)[0]
    elif cfg.eval_fraction > 0 and len(examples) >= 10:
        rng = np.random.default_rng(cfg.seed)
        idx = rng.permutation(len(examples))
        n_eval = max(1, int(round(len(examples) * cfg.eval_fraction)))
        eval_examples = [examples[i] for i in sorted(idx[:n_eval])]
        examples = [examples[i] for i in sorted(idx[n_eval:])]
    if not examples:
        raise LmsmithError("no training examples left", f"{counts['dropped']} were longer than --seq-len {cfg.seq_len} and dropped")
    msg = f"chat data: {len(examples)} train examples"
    if eval_examples:
        msg += f", {len(eval_examples)} eval"
    for k in ("truncated", "dropped", "bad_lines"):
        if counts[k]:
            msg += f", {counts[k]} {k.replace('_', ' ')}"
    console.print(msg)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    refs = [DataRef(path=str(f.resolve()), sha256=file_sha256(f), size=f.stat().st_size) for f in files]
    counts.update(train_examples=len(examples), eval_examples=len(eval_examples or []))
    return DataSpec(ChatRows(examples), ChatRows(eval_examples) if eval_examples else None, collate_chat(pad), refs, counts)


# ------------------------------------------------------------------ DPO / reward model: preference pairs
class Rows(list):
    """A list that is a dataset (indexable, sized)."""


def collate_pairs(pad_id: int) -> Callable[[list[PairExample]], dict[str, torch.Tensor]]:
    """Chosen rows first, then rejected: one forward pass scores both halves of every pair."""
    chat = collate_chat(pad_id)

    def collate(rows: list[PairExample]) -> dict[str, torch.Tensor]:
        batch = chat([r.chosen for r in rows] + [r.rejected for r in rows])
        if all(r.ref is not None for r in rows):
            batch["ref_logps"] = torch.tensor([r.ref for r in rows], dtype=torch.float64)
        batch["pair_index"] = torch.tensor([getattr(r, "index", -1) for r in rows], dtype=torch.long)
        return batch
    return collate


def _render_pairs(files: list[Any], tokenizer: Any, cfg: TrainConfig, counts: dict[str, int]) -> list[PairExample]:
    out: list[PairExample] = []
    for f in files:
        pairs, bad = read_pairs(f, cfg.skip_bad_lines)
        counts["bad_lines"] += bad
        for p in pairs:
            ex = render_pair(tokenizer, p, cfg.seq_len, cfg.too_long)
            if ex is None:
                counts["dropped"] += 1
                continue
            if max(len(ex.chosen), len(ex.rejected)) >= cfg.seq_len:
                counts["truncated"] += 1
            out.append(ex)
    return out


def preference_data(cfg: TrainConfig, tokenizer: Any) -> DataSpec:
    files = resolve_files(cfg.data)
    counts = {"pairs": 0, "truncated": 0, "dropped": 0, "bad_lines": 0}
    pairs = _render_pairs(files, tokenizer, cfg, counts)
    held: list[PairExample] | None = None
    if cfg.eval_data:
        held = _render_pairs(resolve_files(cfg.eval_data), tokenizer, cfg, dict(counts))
    elif cfg.eval_fraction > 0 and len(pairs) >= 10:
        idx = np.random.default_rng(cfg.seed).permutation(len(pairs))
        n_eval = max(1, int(round(len(pairs) * cfg.eval_fraction)))
        held = [pairs[i] for i in sorted(idx[:n_eval])]
        pairs = [pairs[i] for i in sorted(idx[n_eval:])]
    if not pairs:
        raise LmsmithError("no preference pairs left", f"{counts['dropped']} were longer than --seq-len {cfg.seq_len}")
    for i, p in enumerate(pairs):
        p.index = i  # type: ignore[attr-defined]
    msg = f"preference data: {len(pairs)} train pairs" + (f", {len(held)} eval" if held else "")
    for k in ("truncated", "dropped", "bad_lines"):
        if counts[k]:
            msg += f", {counts[k]} {k.replace('_', ' ')}"
    console.print(msg)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    counts.update(pairs=len(pairs), eval_pairs=len(held or []))
    return DataSpec(Rows(pairs), Rows(held) if held else None, collate_pairs(pad), data_refs(cfg.data), counts)


# ------------------------------------------------------------------ GRPO: prompts (rollouts come from the engine)
def collate_prompts(rows: list[Any]) -> dict[str, torch.Tensor]:
    """Only tensors travel through the loader (it pins them); the objective looks prompts up by index."""
    return {"prompt_index": torch.tensor([r.index for r in rows], dtype=torch.long)}


def prompt_data(cfg: TrainConfig, tokenizer: Any) -> DataSpec:
    rows: list[Any] = []
    for f in resolve_files(cfg.data):
        rows += read_prompts(f, cfg.skip_bad_lines)
    kept = Rows()
    for r in rows:
        r.ids = prompt_ids(tokenizer, r.prompt, r.columns.get("tools"))
        if len(r.ids) > cfg.seq_len:
            continue
        r.index = len(kept)
        kept.append(r)
    if not kept:
        raise LmsmithError(f"every prompt is longer than --seq-len {cfg.seq_len}", "raise --seq-len")
    console.print(f"prompts: {len(kept)}" + (f" ({len(rows) - len(kept)} longer than --seq-len skipped)"
                                              if len(rows) > len(kept) else ""))
    return DataSpec(kept, None, collate_prompts, data_refs(cfg.data), {"prompts": len(kept)})


def looks_like_chat(specs: list[str]) -> bool:
    """Chat JSONL (a `messages` list on the first line) rather than text."""
    import json

    for f in resolve_files(specs):
        if f.suffix == ".jsonl":
            with open(f, encoding="utf-8", errors="replace") as fh:
                first = fh.readline()
            try:
                return isinstance(json.loads(first).get("messages"), list)
            except (ValueError, AttributeError):
                return False
        return False
    return False


def distill_data(cfg: TrainConfig, tokenizer: Any) -> DataSpec:
    """Distillation reads either kind: chat (targets = assistant tokens) or packed text (every token)."""
    fmt = getattr(cfg, "data_format", "auto")
    chat = fmt == "chat" or (fmt == "auto" and looks_like_chat(cfg.data))
    return (chat_data if chat else packed_text)(cfg, tokenizer)


FORMATS: dict[str, Callable[[TrainConfig, Any], DataSpec]] = {
    "pretrain": packed_text, "sft": chat_data, "dpo": preference_data, "rm": preference_data, "grpo": prompt_data,
    "distill": distill_data}


def build_data(cfg: TrainConfig, tokenizer: Any) -> DataSpec:
    if not cfg.data:
        raise LmsmithError("no training data given", "pass --data FILE|GLOB|DIR")
    return FORMATS[cfg.task](cfg, tokenizer)
