"""Benchmarks of the guard stage (see bench/README.md)."""
