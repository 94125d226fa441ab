"""Benchmarks of the compress stage (see bench/README.md)."""
