"""Declarative trace mappings: a small YAML file says where a JSON log keeps its units, events,
messages, roles, tool calls, outcome, feedback, times and usage, and which regular expressions turn
text actions (``GET url``, ``FINISH([...])``) into tool calls; ``assay ingest --mapping FILE`` reads
files with it, no code needed. The format is :class:`TraceMapping` (JSON Schema shipped as
``mapping.schema.json``); paths are :mod:`assay.traces.mapping.paths`. Worked examples: ``docs/mappings/``.
"""

from assay.traces.mapping.model import TraceMapping, mapping_json_schema
from assay.traces.mapping.reader import MappingReader, load_mapping, mapping_reader, parse_mapping

__all__ = ["MappingReader", "TraceMapping", "load_mapping", "mapping_json_schema", "mapping_reader",
           "parse_mapping"]
