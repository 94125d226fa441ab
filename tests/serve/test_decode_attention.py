"""The one-launch decode attention (`paged_decode.decode_attention`: RoPE, K/V write, split attention and the
ticket merge in one kernel) in Triton's CPU interpreter, in a subprocess (TRITON_INTERPRET must be set before
Triton is imported): skipped where Triton is not installed, as on the CPU CI. tests/gpu/test_paged_decode_gpu.py
runs it compiled, and the GPU engine tests run it inside the decode graphs."""

from __future__ import annotations

from pathlib import Path

from triton_interpreter import needs_triton, run_check


@needs_triton
def test_one_launch_decode_attention_in_the_interpreter():
    out = run_check(Path(__file__).with_name("decode_attn_check.py"))
    assert out.count("ok ") == 6, out


@needs_triton
def test_prefix_hit_chunks_as_decode_rows_in_the_interpreter():
    """Chunks after cached tokens attend as paged-decode rows: same greedy tokens and log-probabilities as the
    per-chunk SDPA path (the engine end to end, both prefix hits taking the new path)."""
    out = run_check(Path(__file__).with_name("chunk_rows_check.py"))
    assert out.count("ok chunk-rows") == 2, out
