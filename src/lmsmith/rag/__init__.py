"""Retrieval: embeddings, vector stores, indexes as registry artifacts, retrieval-augmented answers.

Retrieval (embed, store, index, answer prompts, metrics) imports the ground floor and `evaluate` (the
judge), never `serve`: the server imports retrieval to answer `/v1/embeddings` and `"rag"` chat requests,
and `lmsmith rag ask` wires retrieval to the engine in `rag/cli.py`.
"""
