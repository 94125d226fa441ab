"""Benchmarks of the rag stage: vector search (see bench/README.md)."""
