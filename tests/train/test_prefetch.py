"""The prefetching loader hands out exactly the plain loader's batches, and its saved position is that of
the batches handed out (not of those prepared ahead), so a resumed run continues where it stopped."""

from __future__ import annotations

import pytest
import torch

from lmsmith.train.data import Loader, Prefetcher


def rows(n: int = 23) -> list[dict[str, torch.Tensor]]:
    return [{"input_ids": torch.full((4,), i), "labels": torch.full((4,), i)} for i in range(n)]


def collate(batch):
    return {k: torch.stack([r[k] for r in batch]) for k in batch[0]}


@pytest.mark.parametrize("depth", [0, 1, 3])
def test_same_batches_and_positions_as_the_plain_loader(depth):
    plain, ahead = Loader(rows(), 4, collate, seed=1), Prefetcher(Loader(rows(), 4, collate, seed=1), depth=depth)
    for _ in range(14):  # across epoch boundaries (6 batches per epoch)
        assert torch.equal(plain.next()["input_ids"], ahead.next()["input_ids"])
        assert ahead.state() == plain.state() and ahead.epoch == plain.epoch
    ahead.close()


def test_resume_from_a_saved_position_continues_the_sequence():
    ref = Prefetcher(Loader(rows(), 4, collate, seed=2), depth=2)
    seen = [ref.next()["input_ids"] for _ in range(5)]
    saved = ref.state()
    rest = [ref.next()["input_ids"] for _ in range(4)]
    ref.close()
    again = Prefetcher(Loader(rows(), 4, collate, seed=2), depth=2)
    again.load_state(saved)
    assert all(torch.equal(a, b) for a, b in zip(rest, [again.next()["input_ids"] for _ in range(4)]))
    assert len(seen) == 5
    again.close()


def test_errors_in_the_worker_reach_the_caller():
    def bad(batch):
        raise ValueError("broken row")

    p = Prefetcher(Loader(rows(), 4, bad, seed=0), depth=2)
    with pytest.raises(ValueError, match="broken row"):
        p.next()
