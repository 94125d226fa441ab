"""Benchmarks of the data stage (see bench/README.md)."""
