"""Benchmarks tools: the GPU suite, wheels for the GPU image, generated built-in task data (see bench/README.md)."""
