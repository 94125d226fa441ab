"""Fixed-length packing of a token stream for pretraining.

Documents are concatenated with EOS after each (done at tokenization) and cut into rows of `seq_len`
tokens, so no padding is wasted. With `cross_doc_attention=False` each row also carries position ids
that restart at every document start and a block-diagonal causal attention mask, so a token never
attends to (or is predicted from) a different document; the first token of each document gets no
loss because its only context would be the previous document.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lmsmith.data.chat import IGNORE_INDEX


@dataclass
class PackedRows:
    """Row `i` is tokens[starts[i] : starts[i] + seq_len] of a token stream with document starts `doc_starts`."""

    tokens: np.ndarray  # 1-D, any integer dtype (a memmap is fine: rows are read lazily)
    doc_starts: np.ndarray  # sorted offsets where documents begin (0 first)
    seq_len: int
    cross_doc_attention: bool = True
    row_ids: np.ndarray | None = None  # a subset of rows (train/eval split); None = all

    def __post_init__(self) -> None:
        total = len(self.tokens) // self.seq_len
        if self.row_ids is None:
            self.row_ids = np.arange(total, dtype=np.int64)

    @property
    def n_rows_total(self) -> int:
        return len(self.tokens) // self.seq_len

    def __len__(self) -> int:
        return len(self.row_ids)

    def split(self, eval_rows: int) -> tuple["PackedRows", "PackedRows"]:
        """The last `eval_rows` rows become the held-out split (contiguous, so it is real unseen text)."""
        ids = np.arange(self.n_rows_total, dtype=np.int64)
        train, held = ids[: len(ids) - eval_rows], ids[len(ids) - eval_rows:]
        mk = lambda r: PackedRows(self.tokens, self.doc_starts, self.seq_len, self.cross_doc_attention, r)  # noqa: E731
        return mk(train), mk(held)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        start = int(self.row_ids[i]) * self.seq_len
        ids = torch.from_numpy(np.asarray(self.tokens[start:start + self.seq_len], dtype=np.int64))
        row = {"input_ids": ids, "labels": ids.clone()}
        if not self.cross_doc_attention:
            row.update(document_layout(self.doc_starts, start, self.seq_len))
            row["labels"][row["doc_first"]] = IGNORE_INDEX
            del row["doc_first"]
        return row


def document_layout(doc_starts: np.ndarray, start: int, length: int) -> dict[str, torch.Tensor]:
    """Position ids restarting at each document start inside [start, start+length) and a doc-id per token."""
    lo = np.searchsorted(doc_starts, start, side="right")
    hi = np.searchsorted(doc_starts, start + length, side="left")
    inner = [int(s) - start for s in doc_starts[lo:hi]]  # document starts strictly inside the row
    doc_id = torch.zeros(length, dtype=torch.long)
    pos = torch.arange(length, dtype=torch.long)
    first = torch.zeros(length, dtype=torch.bool)
    for k, s in enumerate(inner, 1):
        doc_id[s:] = k
        pos[s:] = torch.arange(length - s)
        first[s] = True
    return {"position_ids": pos, "doc_ids": doc_id, "doc_first": first}


def block_causal_mask(doc_ids: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Additive [B, 1, T, T] mask: causal and within-document only (0 where allowed, -inf elsewhere)."""
    t = doc_ids.shape[-1]
    causal = torch.ones(t, t, dtype=torch.bool, device=doc_ids.device).tril()
    same = doc_ids[:, :, None] == doc_ids[:, None, :]
    allowed = same & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=doc_ids.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]


def collate_packed(rows: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack packed rows; document ids become a block-causal 4-D attention mask (no cross-doc attention)."""
    batch = {k: torch.stack([r[k] for r in rows]) for k in rows[0]}
    if "doc_ids" in batch:
        batch["attention_mask"] = block_causal_mask(batch.pop("doc_ids"))
    return batch
