"""The guard stage: prompt-injection scanning of inputs (user text, RAG chunks, tool results) and scanning
of outputs (secrets, PII, system-prompt leakage). Imports the ground floor and data/ only."""

from lmsmith.guard.rules import count_control_tokens
from lmsmith.guard.scan import Guard, ScanResult, scan_chunks

__all__ = ["Guard", "ScanResult", "scan_chunks", "count_control_tokens"]
