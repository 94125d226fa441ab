"""Sharded batches: each rank of a data-parallel job reads its own rows of every epoch's shuffled order."""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from lmsmith.data.chat import IGNORE_INDEX
from lmsmith.train.collectives import DistEnv
from lmsmith.train.data import Loader


def shard_rows(ids: Sequence[int], rank: int, world: int) -> list[int]:
    """This rank's share of one global batch: every `world`-th row starting at `rank` (even sizes)."""
    return list(ids[rank::world])


def make_loader(dataset: Sequence[Any], batch_size: int, collate: Callable, seed: int, env: DistEnv) -> Loader:
    if not env.enabled or env.world == 1:
        return Loader(dataset, batch_size, collate, seed)
    return ShardedLoader(dataset, batch_size, collate, seed, rank=env.rank, world=env.world)


class ShardedLoader(Loader):
    """Each rank reads its own slice of the same global batch.

    All ranks walk the same seeded order; a step consumes `batch_size x world` rows (the global batch)
    and rank r takes rows r, r+world, ... of it. The position (epoch, row index) is global, so a
    checkpoint resumes on a different number of processes, and N processes with batch B see exactly
    the rows one process with batch N x B would, the short last batch of an epoch included: a rank
    left without a row gets a stand-in row whose labels are all ignored (no loss, no gradient), so
    every rank still joins the step's collectives."""

    def __init__(self, dataset: Sequence[Any], batch_size: int, collate: Callable, seed: int,
                 rank: int = 0, world: int = 1, shuffle: bool = True):
        super().__init__(dataset, batch_size, collate, seed, shuffle)
        self.rank, self.world = rank, world

    def batches_per_epoch(self) -> int:
        return max(1, -(-len(self.dataset) // (self.batch_size * self.world)))

    def next(self) -> dict[str, torch.Tensor]:
        if self.index >= len(self._order):
            self.epoch, self.index = self.epoch + 1, 0
            self._order = self._make_order()
        ids = self._order[self.index:self.index + self.batch_size * self.world]
        self.index += len(ids)
        mine = shard_rows(ids, self.rank, self.world)
        if mine:
            return self.collate([self.dataset[i] for i in mine])
        batch = self.collate([self.dataset[ids[0]]])
        if "labels" in batch:
            batch["labels"] = torch.full_like(batch["labels"], IGNORE_INDEX)
        return batch
