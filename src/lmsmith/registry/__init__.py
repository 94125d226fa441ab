"""The ground-floor model registry: versioned, content-addressed model directories with lineage.

Every stage reads and writes models through it; it imports no stage.
"""

from lmsmith.registry.registry import DataRef, FileEntry, Lineage, ModelVersion, PathModel, Registry

__all__ = ["DataRef", "FileEntry", "Lineage", "ModelVersion", "PathModel", "Registry"]
