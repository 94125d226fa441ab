"""The decode graph's device-side input advance (fused.StepInputs) in Triton's CPU interpreter; the engine end to
end with it is tests/gpu/test_engine_gpu.py::test_decode_inputs_advance_on_the_device."""

from __future__ import annotations

from pathlib import Path

from triton_interpreter import needs_triton, run_check


@needs_triton
def test_step_epilogue_advances_live_rows_and_hands_tokens_to_the_ring():
    out = run_check(Path(__file__).with_name("step_advance_check.py"))
    assert out.count("ok step") == 3 and "ok off" in out, out


@needs_triton
def test_engine_with_emulated_decode_graphs_gives_the_plain_engines_tokens():
    """The host side of the advance (which steps may skip the copy, the ring hand-off) against the plain engine."""
    out = run_check(Path(__file__).with_name("decode_graphs_check.py"))
    assert out.count("ok ") == 16, out
