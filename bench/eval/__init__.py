"""Benchmarks of the eval stage (see bench/README.md)."""
