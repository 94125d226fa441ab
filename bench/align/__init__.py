"""Benchmarks of the align stage: GRPO against TRL (see bench/README.md)."""
