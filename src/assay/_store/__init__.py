"""Private: the SQLAlchemy store."""

from assay._store.store import IngestCounts, Store

__all__ = ["IngestCounts", "Store"]
