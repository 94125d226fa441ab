"""Run by test_engine_step_advance.py in a subprocess with TRITON_INTERPRET=1: the greedy-argmax kernel's decode-step
epilogue (fused.StepInputs) on two live rows and a padding row, over three steps that cross a block boundary, and
with the advance switched off. Prints "ok ..." lines or raises."""

from __future__ import annotations

import os

assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"

import torch  # noqa: E402

from lmsmith.serve.fused import StepInputs, argmax_rows  # noqa: E402

TABLE, BS = 6, 4


def main() -> None:
    g = torch.Generator().manual_seed(0)
    # token, position, slot, context length, source row, parity, block table (3 blocks of 4)
    buf = torch.tensor([[11, 5, 9 * BS + 1, 6, -1, 0, 7, 9, 3],   # live, host token, position 5 in block 9
                        [0, 2, 4 * BS + 2, 3, 1, 0, 4, 8, 0],     # live, device token, position 2 in block 4
                        [0, 0, 5 * BS, 1, -2, 0, 5, 0, 0]])      # padding: the scratch block 5
    ring = torch.full((2, 3), -1, dtype=torch.long)
    on = torch.ones(1, dtype=torch.int32)
    step = StepInputs(buf, ring, on, BS, TABLE)
    tokens = torch.zeros(3, dtype=torch.long)
    for i in range(3):
        logits = torch.randn(3, 5000, generator=g)  # two argmax chunks of 4096
        before = buf.clone()
        argmax_rows(logits, out=tokens, step=step)
        want = logits.argmax(-1)
        assert torch.equal(tokens, want), (tokens, want)
        par = int(before[0, 5])
        assert torch.equal(ring[par], want) and (buf[:, 5] == 1 - par).all(), (ring, buf)
        for r in (0, 1):
            pos = int(before[r, 1]) + 1
            table = before[r, TABLE:].tolist()
            assert buf[r, 1] == pos and buf[r, 3] == pos + 1 and buf[r, 4] == r, buf[r]
            assert buf[r, 2] == table[min(pos // BS, 2)] * BS + pos % BS, buf[r]
            assert buf[r, 0] == before[r, 0] and buf[r, TABLE:].tolist() == table
        assert torch.equal(buf[2, :5], before[2, :5]), buf[2]  # padding keeps writing to the scratch block
        print(f"ok step {i} positions {buf[:2, 1].tolist()} slots {buf[:2, 2].tolist()}")
    assert buf[0, 2] == 3 * BS + 0 and buf[1, 2] == 8 * BS + 1  # row 0 crossed from block 9 into block 3
    on.zero_()
    before, ring_before = buf.clone(), ring.clone()
    argmax_rows(torch.randn(3, 5000, generator=g), out=tokens, step=step)
    assert torch.equal(buf, before) and torch.equal(ring, ring_before)
    print("ok off")


if __name__ == "__main__":
    main()
