"""Run by test_engine_step_advance.py in a subprocess with TRITON_INTERPRET=1: the engine with its decode graphs
emulated on the CPU (each "graph" recomputes the captured step into its captured outputs, as a replay writes them;
the greedy-argmax kernel and its step epilogue run in Triton's interpreter), with the device-side input advance
on and off, overlapped (decodes, or prefills too) and synchronous, greedy and seeded, one and three sequences at block size 4 (a new block,
hence a copy, every 4 tokens). Both must give the plain engine's tokens. Prints "ok ..." lines or raises."""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

assert os.environ.get("TRITON_INTERPRET") == "1", "run under TRITON_INTERPRET=1"

import torch  # noqa: E402

from lmsmith.serve.engine import Engine  # noqa: E402
from lmsmith.serve.model_runner import DecodeGraphs  # noqa: E402
from lmsmith.serve.sampling_params import SamplingParams  # noqa: E402
from lmsmith.tiny import build_tiny  # noqa: E402

sys.path.insert(0, str(Path(__file__).parents[1]))  # tests/: the shared engine driver
from engine_runs import run_all  # noqa: E402


class Replay:
    """A CUDA graph's stand-in: each replay recomputes the step into the tensor the capture returned."""

    def __init__(self, fn, out: torch.Tensor):
        self.fn, self.out = fn, out

    def replay(self) -> None:
        self.out.copy_(self.fn())

    def reset(self) -> None:
        pass


class CpuGraphs(DecodeGraphs):
    def _capture(self, n: int, plan: dict | None = None):
        out = self._forward(n, plan).clone()
        return Replay(lambda: self._forward(n, plan), out), out


class Event:  # a CUDA event's stand-in: CPU work is done when it returns
    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass


def main() -> int:
    tiny = build_tiny(Path(tempfile.mkdtemp()) / "tiny", "llama")
    kw = dict(dtype="float32", device="cpu", block_size=4, max_num_seqs=4)
    plain = Engine(str(tiny), **kw)
    engine = Engine(str(tiny), **kw)
    r = engine.runner
    graphs = r.graphs = CpuGraphs(r, 4, scratch_block=r.kv_cache.shape[2] - 1)
    step = graphs.step
    # the CUDA engine's hand-off: each step's tokens reach host buffers (or the step's own ring) before the next
    # replay overwrites the graph's output row
    engine._host_bufs = [torch.zeros(4, dtype=torch.long) for _ in range(2)]
    engine._events = [Event(), Event()]
    assert step is not None and int(step.on.item()) == 1 and graphs.buckets == [1, 2, 4]
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, engine.vocab_size, (k,), generator=g).tolist() for k in (5, 9, 3)]
    params = {"greedy": SamplingParams(max_tokens=14, temperature=0, ignore_eos=True),
              "seeded": SamplingParams(max_tokens=14, temperature=0.9, seed=7, ignore_eos=True)}
    for name, sp in params.items():
        for batch in (prompts[:1], prompts):
            ref = run_all(plain, batch, sp)
            for overlap in (True, False):
                engine.async_scheduling = overlap
                for advance in (True, False):
                    graphs.step, graphs.last = (step if advance else None), None
                    skipped, replays = graphs.copies_skipped, graphs.replays
                    rings = [0]
                    launch = r.decode_step

                    def counted(*a, launch=launch, rings=rings):
                        out = launch(*a)
                        rings[0] += r.greedy_on_host is not None
                        return out
                    r.decode_step = counted
                    got = run_all(engine, batch, sp)
                    del r.decode_step
                    assert (rings[0] > 0) == (advance and bool(overlap)), rings  # the step's ring: greedy, overlapped
                    if got != ref:
                        raise AssertionError(f"{name} x{len(batch)} overlap={overlap} advance={advance}: {got} vs {ref}")
                    print(f"ok {name} x{len(batch)} overlap={overlap} advance={advance} "
                          f"skipped {graphs.copies_skipped - skipped} of {graphs.replays - replays}")
                    if advance and overlap and len(batch) == 1 and graphs.copies_skipped - skipped < 6:
                        raise AssertionError("a lone sequence's decode steps should mostly skip the copy")
    return 0


if __name__ == "__main__":
    sys.exit(main())
