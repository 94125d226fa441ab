"""Benchmarks of the serve stage (see bench/README.md)."""
