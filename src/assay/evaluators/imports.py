"""Import the verdicts of a judge the team runs elsewhere as scores of an ``external`` evaluator.

``assay scores import FILE`` reads JSON Lines or CSV, one verdict a row::

    {"unit": "trace/4bf9...", "evaluator": "correctness", "value": 0.0, "label": "fail",
     "reason": "The answer misses the refund amount.", "model": "gpt-4o", "version": "judge-v2",
     "time": "2026-02-10T17:15:56Z"}

Columns (CSV header or JSON keys): ``unit`` (or ``unit_id``) or ``trace`` (``trace_id``: the unit holding
that trace), ``evaluator`` (the name in the source, matched to an external evaluator's ``external.name``
or its own name), ``value`` (or ``score``), ``label``, ``reason`` (or ``explanation``, ``comment``),
``model``, ``version``, ``time`` (or ``timestamp``). Each evaluator's rows go in through the one score
writer (:func:`assay._store.scores.write_scores`) with lineage, in one run of kind ``import``: a value
that fits the evaluator's ``external`` section is scored, one that does not is *unscored* with the reason
and the raw value kept (:func:`~assay.evaluators.external.read_value`). A row is rejected, with its
reason, when it names no unit, an unknown unit or trace, or an evaluator that is not ``external``, or
when its unit and evaluator already came earlier in the same import.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, JsonValue, ValidationError, field_validator
from sqlalchemy import select

from assay._store.scores import Lineage, NewScore, RunParams, finish_run, new_run, write_scores
from assay._store.store import Store
from assay._store.tables import SpanRow, UnitRow
from assay.evaluators.definition import EvaluatorDef, content_version
from assay.evaluators.external import IMPORT_RUN_KIND, ExternalEvaluatorDef, ExternalValue, read_value
from assay.exceptions import UsageError
from assay.traces.evaluations import EVALUATION_EVENT, CarriedEvaluation, evaluation_event

_CHUNK = 500


class ImportedRow(BaseModel):
    """One row of an import file (see the module docstring for the columns and their other names)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    unit: str | None = Field(default=None, validation_alias=AliasChoices("unit", "unit_id"))
    trace: str | None = Field(default=None, validation_alias=AliasChoices("trace", "trace_id"))
    evaluator: str = Field(min_length=1, validation_alias=AliasChoices("evaluator", "evaluator_name", "name"))
    value: JsonValue = Field(default=None, validation_alias=AliasChoices("value", "score"))
    label: str | None = None
    reason: str = Field(default="", validation_alias=AliasChoices("reason", "explanation", "comment"))
    model: str | None = None
    version: str | None = None
    time: str | None = Field(default=None, validation_alias=AliasChoices("time", "timestamp", "created_at"))

    @field_validator("unit", "trace", "label", "model", "version", "time", mode="before")
    @classmethod
    def _blank_is_none(cls, v: Any) -> Any:
        if isinstance(v, str) and not v.strip():
            return None
        return v if v is None or isinstance(v, str) else str(v)

    @field_validator("reason", mode="before")
    @classmethod
    def _text(cls, v: Any) -> Any:
        return "" if v is None else str(v)


class Verdict(NamedTuple):
    """One verdict to import: where it was read, the unit (or trace) it is about, the evaluator's name in the
    source, and the value as given."""

    where: str
    unit: str | None
    trace: str | None
    evaluator: str
    value: ExternalValue


class ImportParams(RunParams):
    """What an import run (kind ``import``) read."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    source: str = Field(description="the file (or the traces) the verdicts came from")


class ImportResult(BaseModel):
    """What an import stored and what it rejected (with the reasons), by evaluator."""

    model_config = ConfigDict(frozen=True)

    source: str
    run_id: str | None = Field(description="the import run (None: nothing was stored)")
    scored: dict[str, int] = Field(default_factory=dict, description="evaluator -> verdicts that fit")
    unscored: dict[str, int] = Field(default_factory=dict, description="evaluator -> values that do not fit")
    unscored_reasons: tuple[str, ...] = Field(default=(), description="the first reasons a value did not fit")
    rejected: tuple[tuple[str, str], ...] = Field(default=(), description="(where, why) of rows not stored")

    @property
    def imported(self) -> int:
        """Rows stored, scored or unscored."""
        return sum(self.scored.values()) + sum(self.unscored.values())


def read_rows(path: Path, fmt: str = "auto") -> tuple[list[Verdict], list[tuple[str, str]]]:
    """The verdicts of a file (``fmt``: ``jsonl``, ``csv``, ``otel``: OTLP JSON Lines of
    ``gen_ai.evaluation.result`` log records as ``assay scores export --otel`` writes them; ``auto``: CSV by
    the ``.csv`` suffix, OTel when the first line holds ``resourceLogs``, else JSON Lines), and the rows that
    could not be read, as ``(file:line, why)``.

    Raises:
        UsageError: an unknown format, or a file that cannot be read.
    """
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from exc
    if fmt == "auto":
        first = next((line for line in text.splitlines() if line.strip()), "")
        fmt = "csv" if path.suffix.lower() == ".csv" else "otel" if '"resourceLogs"' in first else "jsonl"
    if fmt not in ("jsonl", "csv", "otel"):
        raise UsageError(f"--format takes auto, jsonl, csv or otel; got {fmt!r}")
    if fmt == "otel":
        return _otel_rows(text, path.name)
    raw = _csv_rows(text) if fmt == "csv" else _jsonl_rows(text)
    verdicts: list[Verdict] = []
    rejected: list[tuple[str, str]] = []
    for line, data in raw:
        where = f"{path.name}:{line}"
        if isinstance(data, str):
            rejected.append((where, data))
            continue
        try:
            row = ImportedRow.model_validate(data)
        except ValidationError as exc:
            rejected.append((where, "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'row'}: {e['msg']}"
                                              for e in exc.errors(include_url=False))))
            continue
        verdicts.append(Verdict(where, row.unit, row.trace, row.evaluator, ExternalValue(
            value=row.value, label=row.label, reason=row.reason, model=row.model, version=row.version, time=row.time,
            source=where)))
    return verdicts, rejected


def _jsonl_rows(text: str) -> Iterable[tuple[int, dict[str, Any] | str]]:
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as exc:
            yield n, f"invalid JSON: {exc.msg}"
            continue
        yield n, data if isinstance(data, dict) else f"expected a JSON object, got {type(data).__name__}"


def _csv_rows(text: str) -> Iterable[tuple[int, dict[str, Any] | str]]:
    reader = csv.DictReader(io.StringIO(text))
    for row in reader:
        extra = row.pop(None, None)
        if extra:
            yield reader.line_num, f"{len(extra)} more field(s) than the header names"
            continue
        yield reader.line_num, {k.strip(): v for k, v in row.items() if k}


def verdict_of(unit_id: str, ev: CarriedEvaluation) -> Verdict:
    """An evaluation result carried in a trace (or an OTel event) as a verdict about ``unit_id`` (an evaluation
    that failed at its source becomes a verdict without a value, so it is stored unscored with the reason)."""
    reason = ev.explanation or (f"the source reported an error: {ev.error}" if ev.error else "")
    return Verdict(f"{unit_id} {ev.where}", unit_id, None, ev.name, ExternalValue(
        value=ev.value, label=ev.label, reason=reason, model=ev.model, version=ev.version, time=ev.time,
        source=f"{ev.origin}: {ev.where}"))


def _otel_rows(text: str, name: str) -> tuple[list[Verdict], list[tuple[str, str]]]:
    """Verdicts of ``gen_ai.evaluation.result`` log records: about ``assay.unit.id`` when the record names one,
    else about the unit holding its trace."""
    from assay.traces.otlp.from_json import read_log_records

    verdicts: list[Verdict] = []
    rejected: list[tuple[str, str]] = []
    for line, data in _jsonl_rows(text):
        where = f"{name}:{line}"
        if isinstance(data, str):
            rejected.append((where, data))
            continue
        try:
            records = list(read_log_records(data))
        except ValueError as exc:
            rejected.append((where, str(exc)))
            continue
        for n, (item, error) in enumerate(records):
            if item is None:
                rejected.append((where, error or "unreadable log record"))
                continue
            trace_id, _, event = item
            if (event.name or event.attributes.get("event.name")) != EVALUATION_EVENT:
                continue
            ev = evaluation_event(event.attributes, event.time_ns, f"record {n}")
            if ev is None:
                rejected.append((where, f"record {n}: no gen_ai.evaluation.name"))
                continue
            unit = event.attributes.get("assay.unit.id")
            v = verdict_of(str(unit or ""), ev)
            verdicts.append(v._replace(where=f"{where} record {n}", unit=str(unit) if unit else None,
                                       trace=None if unit else trace_id or None))
    return verdicts, rejected


def import_verdicts(store: Store, verdicts: Sequence[Verdict], evaluators: Sequence[EvaluatorDef], source: str,
                    rejected: Sequence[tuple[str, str]] = ()) -> ImportResult:
    """Store verdicts as scores of the external evaluators they name, in one run of kind ``import``.

    Args:
        evaluators: the workspace's evaluators (the ``external`` ones are matched by their source name).
        source: what the verdicts came from (recorded with the run).
        rejected: rows already rejected while reading (reported with the rest).
    """
    by_source = _external_by_source(evaluators)
    others = {d.name: d.kind for d in evaluators if not isinstance(d, ExternalEvaluatorDef)}
    units = _resolve_units(store, verdicts)
    rows: dict[str, list[NewScore]] = defaultdict(list)
    models: dict[str, set[str | None]] = defaultdict(set)
    seen: set[tuple[str, str]] = set()
    bad = list(rejected)
    unscored_reasons: list[str] = []
    for v in verdicts:
        defn = by_source.get(v.evaluator)
        unit = units.get((v.unit, v.trace))
        why = _rejection(v, defn, unit, others, seen)
        if why is not None or defn is None or unit is None:
            bad.append((v.where, why or "rejected"))
            continue
        seen.add((unit, defn.name))
        score = _new_score(defn, unit, v.value)
        if score.status == "unscored" and len(unscored_reasons) < 10:
            unscored_reasons.append(f"{v.where}: {score.reason}")
        rows[defn.name].append(score)
        models[defn.name].add(v.value.model)
    run_id = _write(store, rows, models, {d.name: d for d in by_source.values()}, source)
    bad.sort(key=lambda r: _line(r[0]))  # in file order
    return ImportResult(source=source, run_id=run_id, scored=_count(rows, "scored"), unscored=_count(rows, "unscored"),
                        unscored_reasons=tuple(unscored_reasons), rejected=tuple(bad))


def _count(rows: dict[str, list[NewScore]], status: str) -> dict[str, int]:
    """``{evaluator: rows of this status}``, evaluators without any left out."""
    counts = {n: sum(r.status == status for r in rs) for n, rs in rows.items()}
    return {n: k for n, k in counts.items() if k}


def import_file(store: Store, path: Path | str, evaluators: Sequence[EvaluatorDef], fmt: str = "auto") -> ImportResult:
    """:func:`read_rows` then :func:`import_verdicts` (the body of ``assay scores import FILE``).

    Raises:
        UsageError: see :func:`read_rows`.
    """
    path = Path(path)
    verdicts, rejected = read_rows(path, fmt)
    return import_verdicts(store, verdicts, evaluators, str(path), rejected)


def _line(where: str) -> int:
    m = re.search(r":(\d+)", where)
    return int(m.group(1)) if m else 0


def _external_by_source(evaluators: Sequence[EvaluatorDef]) -> dict[str, ExternalEvaluatorDef]:
    out: dict[str, ExternalEvaluatorDef] = {}
    for d in evaluators:
        if isinstance(d, ExternalEvaluatorDef):
            out.setdefault(d.name, d)
            out[d.source_name()] = d
    return out


def _rejection(v: Verdict, defn: ExternalEvaluatorDef | None, unit: str | None, others: dict[str, str],
               seen: set[tuple[str, str]]) -> str | None:
    if defn is None:
        if v.evaluator in others:
            return f"evaluator {v.evaluator!r} is a {others[v.evaluator]} evaluator, not external"
        return (f"no external evaluator named {v.evaluator!r} (add evaluators/NAME.yaml with kind: external and "
                f"external: {{name: {v.evaluator}}})")
    if v.unit is None and v.trace is None:
        return "no unit and no trace id"
    if unit is None:
        return f"unknown unit {v.unit!r}" if v.unit is not None else f"no stored unit holds trace {v.trace!r}"
    if (unit, defn.name) in seen:
        return f"a second verdict of {defn.name} on {unit} in this import (the first is kept)"
    return None


def _resolve_units(store: Store, verdicts: Sequence[Verdict]) -> dict[tuple[str | None, str | None], str]:
    """``{(unit, trace): stored unit id}`` for the verdicts whose unit exists or whose trace a unit holds."""
    unit_ids = sorted({v.unit for v in verdicts if v.unit})
    trace_ids = sorted({v.trace.lower() for v in verdicts if v.trace and not v.unit})
    known: set[str] = set()
    holder: dict[str, str] = {}
    with store.session() as s:
        for i in range(0, len(unit_ids), _CHUNK):
            known.update(s.scalars(select(UnitRow.unit_id).where(UnitRow.unit_id.in_(unit_ids[i:i + _CHUNK]))))
        for i in range(0, len(trace_ids), _CHUNK):
            q = select(SpanRow.trace_id, SpanRow.unit_id).where(SpanRow.trace_id.in_(trace_ids[i:i + _CHUNK]))
            holder.update({t: u for t, u in s.execute(q)})
    out: dict[tuple[str | None, str | None], str] = {}
    for v in verdicts:
        found = v.unit if v.unit in known else None if v.unit else holder.get((v.trace or "").lower())
        if found is not None:
            out[(v.unit, v.trace)] = found
    return out


def _new_score(defn: ExternalEvaluatorDef, unit: str, value: ExternalValue) -> NewScore:
    read = read_value(defn, value)
    raw = value.model_dump_json(exclude_none=True)
    version = content_version(defn)
    if isinstance(read, str):
        said = f" (its reason: {value.reason})" if value.reason else ""
        return NewScore(unit_id=unit, evaluator=defn.name, evaluator_version=version, judge_model=value.model,
                        status="unscored", score=None, verdict=None, reason=read + said, raw=raw,
                        parse_status="failed")
    return NewScore(unit_id=unit, evaluator=defn.name, evaluator_version=version, judge_model=value.model,
                    status="scored", score=read.score, verdict=read.verdict, reason=value.reason, raw=raw)


def _write(store: Store, rows: dict[str, list[NewScore]], models: dict[str, set[str | None]],
           defs: dict[str, ExternalEvaluatorDef], source: str) -> str | None:
    if not rows:
        return None
    run_id = new_run(store, IMPORT_RUN_KIND, ImportParams(source=source))
    for name, scores in rows.items():
        defn = defs[name]
        named = models[name] - {None}
        lineage = Lineage(evaluator=name, evaluator_version=content_version(defn),
                          judge_model=next(iter(named)) if len(named) == 1 else None,
                          judge_parameters={"provider": "external", "source": source}, dataset_version=None,
                          run_id=run_id, run_kind=IMPORT_RUN_KIND)
        write_scores(store, lineage, scores)
    finish_run(store, run_id, {"source": source, "scored": _count(rows, "scored"),
                               "unscored": _count(rows, "unscored")})
    return run_id
