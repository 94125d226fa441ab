"""Benchmarks of the train stage (see bench/README.md)."""
