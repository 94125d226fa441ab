"""Benchmarks of the ops stage: monitoring (see bench/README.md)."""
