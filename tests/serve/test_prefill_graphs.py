"""Piecewise prefill graphs (serve.prefill_graphs) on the CPU: the same pieces, padding, bucketing, capture order and
capture-time check as on CUDA (each graph emulated by recomputing into its captured outputs), against the plain model."""

from __future__ import annotations

import pytest
import torch

from engine_runs import run_all
from lmsmith.serve.engine import Engine
from lmsmith.serve.prefill_graphs import PrefillGraphs
from lmsmith.serve.sampling_params import SamplingParams
from lmsmith.serve.scheduler import ScheduledSeq
from lmsmith.serve.sequence import Sequence

KW = dict(device="cpu", max_num_seqs=4, block_size=4, max_num_batched_tokens=64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from lmsmith.tiny import build_tiny

    return build_tiny(tmp_path_factory.mktemp("pg") / "tiny", "llama")


def with_pieces(engine: Engine, capture: bool = False) -> PrefillGraphs:
    """capture=False: the pieces run eagerly each step; True: captured (on a CPU, each piece's "graph" replays
    into the tensors it left at capture, as a CUDA graph writes its outputs), checked per bucket."""
    r = engine.runner
    r.prefill_graphs = PrefillGraphs(r, 64, scratch_block=r.kv_cache.shape[2] - 1, capture=capture)
    return r.prefill_graphs


def greedy(engine: Engine, prompts: list[list[int]]) -> dict:
    """Six greedy tokens per prompt, all in flight together (prefill, mixed and decode steps)."""
    return run_all(engine, prompts, SamplingParams(max_tokens=6, temperature=0))


def test_buckets_pad_up_to_the_token_budget(tiny):
    pg = with_pieces(Engine(str(tiny), **KW))
    assert pg.sizes == [16, 32, 64]
    assert [pg.bucket(n) for n in (1, 16, 17, 33, 64, 65)] == [16, 16, 32, 64, 64, None]


@pytest.mark.parametrize("capture", [False, True])
def test_a_mixed_padded_step_matches_the_eager_model(tiny, capture):
    """Two fresh prompts of one length (the batched path), one of another, a later chunk and two decodes."""
    plain, piecewise = Engine(str(tiny), **KW), Engine(str(tiny), **KW)
    pg = with_pieces(piecewise, capture)
    assert not pg.rejected and sorted(pg.buckets) == [16, 32, 64]  # every bucket passed its check at capture

    def batch(engine: Engine) -> list[ScheduledSeq]:
        out = []
        bs = engine.blocks.block_size
        for length, start, n in ((7, 0, 7), (7, 0, 7), (5, 0, 5), (12, 6, 6), (9, 8, 1), (3, 2, 1)):
            ids = torch.randint(0, engine.vocab_size, (length,), generator=torch.Generator().manual_seed(length)).tolist()
            seq = Sequence(f"r{len(out)}", 0, ids, SamplingParams())
            seq.block_table = engine.blocks.allocate(-(-length // bs))
            if start:  # the cached context of the later chunk and of the decodes
                engine.runner.execute([ScheduledSeq(seq, 0, start)])
            seq.num_computed = start
            out.append(ScheduledSeq(seq, start, n))
        return out

    a, b = batch(plain), batch(piecewise)
    assert sum(s.num_tokens for s in a) == 27  # padded to the 32-token bucket
    want = plain.runner.execute(a)
    got = piecewise.runner.execute(b)
    assert pg.steps >= 1
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("capture", [False, True])
def test_generation_through_the_pieces_equals_the_plain_engine(tiny, capture):
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], list(range(20, 45)), [7, 8, 9, 10, 11, 12, 13]]
    outs = []
    for pieces in (False, True):
        engine = Engine(str(tiny), **KW)
        pg = with_pieces(engine, capture) if pieces else None
        outs.append(greedy(engine, prompts))
        if pg is not None:
            assert pg.steps >= 6  # prefills, mixed and decode steps all went through the padded pieces
    assert outs[0] == outs[1]


def test_a_lone_fresh_prompt_is_one_whole_step_graph(tiny, monkeypatch):
    """One fresh prompt (padded: 11 tokens in the 16 bucket, 30 in the 32 one) replays the whole-step graph (causal
    attention over the padded rows inside it) and generates what the plain engine does; with a second prompt in the
    step, or LMSMITH_PREFILL_WHOLE=0, the pieces run with eager attention."""
    prompts = [list(range(5, 16)), list(range(40, 70))]
    sp = SamplingParams(max_tokens=5, temperature=0)
    want = [run_all(Engine(str(tiny), **KW), [p], sp)[("r0", 0)] for p in prompts]
    engine = Engine(str(tiny), **KW)
    pg = with_pieces(engine, capture=True)
    assert all(b.whole is not None for b in pg.buckets.values()) and not pg.whole_rejected
    assert [run_all(engine, [p], sp)[("r0", 0)] for p in prompts] == want and pg.whole_steps == 2
    steps = pg.steps
    together = run_all(engine, prompts, sp)  # both prompts in one step (41 of 64 tokens)
    assert together == {("r0", 0): want[0], ("r1", 0): want[1]}
    assert pg.whole_steps == 2 and pg.steps > steps
    monkeypatch.setenv("LMSMITH_PREFILL_WHOLE", "0")
    off = with_pieces(Engine(str(tiny), **KW), capture=True)
    assert all(b.whole is None for b in off.buckets.values())


def test_every_bucket_shares_one_set_of_stream_buffers(tiny):
    """What crosses between pieces lives once, sized for the largest bucket: memory does not grow with the number of
    buckets or pieces (keeping each captured piece's outputs cost ~1.5 GB for the 1B shape)."""
    pg = with_pieces(Engine(str(tiny), **KW), capture=True)
    s = pg.stream
    for n, b in pg.buckets.items():
        for name in ("x", "h", "q", "k", "v", "attn"):
            view, whole = getattr(b, name), getattr(s, name)
            assert view.data_ptr() == whole.data_ptr() and view.shape[0] == n
    assert pg.memory_bytes == s.nbytes() == 64 * s.x[0].nbytes * 2 + 64 * (s.q[0].nbytes * 2 + s.k[0].nbytes * 2)


def test_an_emulated_replay_refuses_a_piece_that_rebinds_a_buffer(tiny):
    """A CUDA graph's replay rewrites its buffers and rebinds no Python name; a piece that assigned a new tensor to
    the bucket would pass on a CPU and read stale buffers on a GPU, so the emulation refuses it."""
    from lmsmith.serve.prefill_graphs import EmulatedGraph

    pg = with_pieces(Engine(str(tiny), **KW))
    b = pg.buckets[16]

    def rebinding(b):
        b.x = b.x + 1

    with pytest.raises(RuntimeError, match="rebound"):
        EmulatedGraph(rebinding, b)
    EmulatedGraph(lambda b: b.x.add_(1), b).replay()  # writing into a buffer is what a piece does


@pytest.mark.parametrize("method,group", [("int8", None), ("int4", 32)])
def test_quantized_models_run_through_the_pieces(tmp_path, method, group):
    """Quantized checkpoints take the piecewise path too (each linear picks its kernel by the bucket's fixed row
    count): every bucket passes its capture check and greedy generation equals the plain engine's."""
    from lmsmith.compress.quantize import quantize_to_dir
    from lmsmith.tiny import build_tiny

    src = build_tiny(tmp_path / "tiny", "llama", hidden_size=128, intermediate_size=256)
    qdir = tmp_path / method
    quantize_to_dir(src, qdir, method, group_size=group)
    prompts = [[5, 6, 7, 8, 9, 10, 11], [12, 13, 14], list(range(20, 45))]
    outs = []
    for pieces in (False, True):
        engine = Engine(str(qdir), **KW)
        assert engine.runner.quant is not None
        pg = with_pieces(engine, capture=True) if pieces else None
        if pg is not None:
            assert not pg.rejected and sorted(pg.buckets) == [16, 32, 64]
        outs.append(greedy(engine, prompts))
        if pg is not None:
            assert pg.steps >= 2
    assert outs[0] == outs[1]
