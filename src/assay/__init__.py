"""assay: human-aligned LLM evaluation in production."""

__version__ = "0.1.0"
