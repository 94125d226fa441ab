"""lmsmith: adapt, train, evaluate, compress, serve and operate LLMs with one toolkit."""

__version__ = "0.1.0"
