"""Loading a mapping file and reading trace files with it (``assay ingest --mapping FILE``)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from assay.exceptions import ConfigError
from assay.traces.environment import record_environment
from assay.traces.mapping.build import CompiledMapping, record_spans
from assay.traces.mapping.model import TraceMapping
from assay.traces.mapping.paths import parse_path
from assay.traces.model import Outcome, Unit
from assay.traces.readers import ReadResult, Rejection, json_documents
from assay.traces.shapes import describe_error, json_type


def load_mapping(path: Path | str) -> TraceMapping:
    """Read and validate a mapping YAML (or JSON) file.

    Raises:
        ConfigError: missing file, invalid YAML, or invalid fields; the message names the file and the
            field (``messages.0.role.path: bad path ...``).
    """
    p = Path(path)
    if not p.is_file():
        raise ConfigError("no such mapping file", str(p))
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"invalid YAML: {exc}".replace("\n", " "), str(p)) from exc
    return parse_mapping(data, str(p))


def parse_mapping(data: object, source: str = "mapping") -> TraceMapping:
    """Validate parsed mapping data.

    Raises:
        ConfigError: not an object, or invalid fields (each named by its path in the file).
    """
    if not isinstance(data, dict):
        raise ConfigError("a mapping file must hold an object (name, messages, ...)", source)
    try:
        return TraceMapping.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("; ".join(_problems(exc)), source) from exc


_BRANCHES = {"RoleFrom": "{path, map, default}"}


def _problems(exc: ValidationError) -> list[str]:
    """One line per field: ``messages.0.role: 'narrator' is not valid: expected 'system', ... or {path, ...}``
    (the branches of a union are folded into one line)."""
    out: dict[str, str] = {}
    branches: dict[str, list[str]] = {}
    for e in exc.errors():
        loc = [str(x) for x in e["loc"]]
        cut = next((i for i, x in enumerate(loc) if x.startswith("literal[") or x in _BRANCHES), None)
        if cut is None:
            where = ".".join(loc) or "(file)"
            out.setdefault(where, f"{where}: {e['msg'].removeprefix('Value error, ')}")
            continue
        where = ".".join(loc[:cut])
        tag = loc[cut]
        branches.setdefault(where, []).append(_BRANCHES.get(tag) or tag.removeprefix("literal[").rstrip("]")
                                              .replace(",", ", "))
        out.setdefault(where, f"{where}: {e['input']!r} is not valid: expected ")
    for where, names in branches.items():
        out[where] += " or ".join(dict.fromkeys(names))
    return list(out.values())


def _outcome(mapping: TraceMapping, value: Any) -> tuple[Outcome, float | None]:
    rule = mapping.outcome
    if rule is None or value is None:
        return "unknown", None
    reward = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    if value in rule.pass_values or (rule.pass_at is not None and reward is not None and reward >= rule.pass_at):
        return "pass", reward
    if value in rule.fail_values or not rule.fail_values:
        return "fail", reward
    return "unknown", reward


def _attributes(compiled: CompiledMapping, record: Any) -> dict[str, Any]:
    m = compiled.mapping
    out: dict[str, Any] = {"format": m.name}
    out |= {k: v for k, path in compiled.attributes.items() if (v := path.first(record)) is not None}
    out |= record_environment({"environment": compiled.get("environment", record),
                               "release": compiled.get("release", record)})
    if m.feedback is not None:
        score = m.feedback.score and compiled_value(m.feedback.score, record)
        if isinstance(score, str) and score in m.feedback.map:
            score = m.feedback.map[score]
        comment = m.feedback.comment and compiled_value(m.feedback.comment, record)
        out |= {k: v for k, v in (("user.feedback.score", score), ("user.feedback.comment", comment))
                if v is not None}
    return out


def compiled_value(path: str, data: Any) -> Any:
    """The first value of ``path`` in ``data`` (None when missing)."""
    return parse_path(path).first(data)


def _stem(path: Path) -> str:
    """The file name without its type: ``run-7.json`` and ``run-7.json.gz`` -> ``run-7``."""
    name = path.name.removesuffix(".gz")
    return Path(name).stem

def _digest(record: Any) -> str:
    return hashlib.sha256(json.dumps(record, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


class MappingReader:
    """Reads one file with a mapping: ``reader(path) -> ReadResult`` (see :func:`assay.traces.ingest_paths`).

    Every record becomes a unit ``NAME/ID`` (format and source name the mapping); a record that cannot
    be read is rejected as ``record N: field: reason`` (``line N, record M`` in JSON Lines) and the
    others are kept.
    """

    def __init__(self, mapping: TraceMapping) -> None:
        self.compiled = CompiledMapping(mapping)
        self.name = mapping.name

    def __call__(self, path: Path) -> ReadResult:
        docs, rejected = json_documents(path)
        result = ReadResult(path=str(path), format=self.name, rejected=rejected)
        found = [(line, self._records(doc)) for line, doc in docs]
        single = sum(len(records) for _, records in found) == 1
        units: dict[str, Unit] = {}
        for line, records in found:
            if isinstance(records, str):
                result.rejected.append(Rejection(str(path), f"{line}: {records}" if line else records))
                continue
            fan = self.compiled.path("records").fans_out
            for n, record in enumerate(records):
                where = ", ".join(x for x in (line, f"record {n}" if fan or not line else "") if x)
                try:
                    unit = self._unit(record, Path(path), single)
                except Exception as exc:  # noqa: BLE001 - one bad record must not cost the file
                    result.rejected.append(Rejection(str(path), f"{where}: {describe_error(exc)}"))
                    continue
                old = units.get(unit.unit_id)
                units[unit.unit_id] = unit if old is None else _merge(old, unit)
        result.rejected.sort(key=lambda r: _line_number(r.reason))
        result.units = list(units.values())
        return result

    def _records(self, doc: Any) -> list[Any] | str:
        """The unit records of one document, or why there are none."""
        text = self.compiled.mapping.records
        found = self.compiled.path("records").values(doc)
        if not found:
            return f"records: {text!r} found nothing in the document"
        bad = next((r for r in found if not isinstance(r, dict | list)), None)
        if bad is not None:
            return f"records: {text!r} selected a {json_type(bad)}, not an object or a list"
        return found

    def _unit(self, record: Any, path: Path, single: bool) -> Unit:
        c, m = self.compiled, self.compiled.mapping
        own = c.get("id", record)
        if m.id is not None and own is None:
            raise ValueError(f"id: {m.id!r} is missing")
        key = str(own) if own is not None else (_stem(path) if single else _digest(record))
        session = c.get("session", record)
        unit_id = f"{m.name}/session/{session}" if session is not None else f"{m.name}/{key}"
        spans = record_spans(c, record, unit_id, f"{m.name}/{key}")
        if session is not None:
            spans = [s.model_copy(update={"session_id": str(session)}) for s in spans]
        outcome, reward = _outcome(m, compiled_value(m.outcome.path, record) if m.outcome else None)
        return Unit(unit_id=unit_id, kind="session" if session is not None else "trace",
                    source=f"{m.name}:{path.name}", spans=tuple(spans), outcome=outcome, reward=reward,
                    attributes=_attributes(c, record))


def _line_number(reason: str) -> int:
    """The N of a ``line N: ...`` reason, for keeping rejections in file order (0 for a document)."""
    head = reason.split(":", 1)[0].split(",", 1)[0]
    return int(head[5:]) if head.startswith("line ") and head[5:].isdigit() else 0


def _merge(a: Unit, b: Unit) -> Unit:
    """Two records of one session: their spans together; a known outcome wins, a fail over a pass."""
    outcome = "fail" if "fail" in (a.outcome, b.outcome) else a.outcome if a.outcome != "unknown" else b.outcome
    return a.model_copy(update={"spans": a.spans + b.spans, "outcome": outcome,
                                "attributes": {**b.attributes, **a.attributes}})


def mapping_reader(mapping: TraceMapping | Path | str) -> MappingReader:
    """A file reader for :func:`assay.traces.ingest_paths` from a mapping or a mapping file.

    Raises:
        ConfigError: the file is missing or invalid (see :func:`load_mapping`).
    """
    return MappingReader(mapping if isinstance(mapping, TraceMapping) else load_mapping(mapping))
