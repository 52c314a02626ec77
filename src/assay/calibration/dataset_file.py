"""Ground-truth datasets that travel: one self-contained, versioned JSON Lines file per criterion that
rebuilds the dataset in any store, with the same unit ids and the same dataset version.

``assay dataset export NAME`` writes, one JSON object per line (``record`` says which):

1. ``manifest``: the file format and its version, the criterion (name, version), the ground-truth
   **dataset version** and its content hash (:func:`~assay.calibration.dataset.dataset_hash`), the
   counts, and a SHA-256 per section of the lines below, so an edited or truncated file is refused;
2. ``criterion``: the criterion's name, text, version and scale (binary, ordinal, categorical, pairwise;
   a store that has it at another version, with other text or on another scale refuses the import: the
   labels would not mean the same);
3. ``unit``: every unit labelled on the criterion (both units of a pairwise judgment), whole: its id,
   kind, source, outcome, environment, release, attributes and **spans in assay's normalised model**
   (``Span`` as stored). Why not OTLP JSON: units from tau-bench, chat logs or a mapping have ids,
   outcomes, rewards and step numbering that OTLP cannot carry, and a re-decode would have to reproduce
   the normalisation bit for bit; the model the store keeps round-trips exactly, so the same timeline
   reaches the judge and the same content hash the store;
4. ``label``: every annotation on the criterion, in the order they were made, with annotator,
   annotator kind, value on the scale (and the second unit and the order shown, pairwise), criterion
   version, severity, rationale, source, whether it was blind, and time.

``assay dataset import FILE`` checks everything first (format, section hashes, criterion, that the labels
rebuild the manifest's dataset and that its version is free or already the same content), then writes
units, criterion, labels and the dataset version. Importing again changes nothing. So calibration in a
fresh CI store reproduces the shared store's report exactly: same items, same dataset version, same
seeded split (its id derives from both) and the same bootstrap.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select, update

from assay._store import Store
from assay._store.tables import CriterionRow, DatasetRow, UnitRow
from assay.annotations import Annotation, add_annotations, get_criterion, list_annotations
from assay.annotations.model import Criterion
from assay.annotations.scale import BinaryScale, Scale
from assay.annotations.store import criterion_scale_json
from assay.calibration.dataset import GroundTruthItem, build_dataset, consolidate_annotations, dataset_hash
from assay.exceptions import NotFoundError, UsageError
from assay.traces.model import Outcome, Span, Unit, UnitKind

SECTIONS = ("criterion", "unit", "label")


class DatasetManifest(BaseModel):
    """The first line of a dataset file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record: Literal["manifest"] = "manifest"
    format: Literal["assay-dataset"] = "assay-dataset"
    format_version: Literal[1] = Field(default=1, description="version of this file format")
    criterion: str = Field(description="the criterion's name")
    criterion_version: int = Field(ge=1, description="the criterion version the labels are current under")
    dataset_version: int = Field(ge=1, description="the ground-truth dataset version in the store it came from")
    content_hash: str = Field(description="the dataset's content hash (criterion, version, unit ids and labels)")
    items: int = Field(ge=0, description="labelled units in the dataset (ties left out)")
    counts: dict[str, int] = Field(description="lines per section: criterion, unit, label")
    hashes: dict[str, str] = Field(description="SHA-256 (hex) of each section's lines, in file order")


class CriterionRecord(BaseModel):
    """The criterion line."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record: Literal["criterion"] = "criterion"
    name: str
    text: str
    version: int = Field(ge=1)
    scale: Scale = Field(default_factory=BinaryScale, description="the criterion's scale (absent: binary)")


class UnitRecord(BaseModel):
    """One unit line: the unit whole, spans in the normalised model."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record: Literal["unit"] = "unit"
    unit_id: str
    kind: UnitKind
    source: str
    outcome: Outcome = "unknown"
    reward: float | None = None
    environment: str | None = None
    release: str | None = None
    attributes: dict[str, Any] = Field(default_factory=dict)
    spans: tuple[Span, ...]

    def unit(self) -> Unit:
        return Unit(unit_id=self.unit_id, kind=self.kind, source=self.source, spans=self.spans,
                    outcome=self.outcome, reward=self.reward, attributes=self.attributes)


class LabelRecord(Annotation):
    """One label line: an annotation with its provenance."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    record: Literal["label"] = "label"

    def annotation(self) -> Annotation:
        return Annotation.model_validate(self.model_dump(exclude={"record"}))


class DatasetFile(BaseModel):
    """A parsed dataset file."""

    model_config = ConfigDict(frozen=True)

    manifest: DatasetManifest
    criterion: CriterionRecord
    units: tuple[UnitRecord, ...]
    labels: tuple[LabelRecord, ...]


class DatasetImport(BaseModel):
    """What :func:`import_dataset_file` did."""

    model_config = ConfigDict(frozen=True)

    path: str
    criterion: str
    criterion_version: int
    dataset_version: int
    content_hash: str
    units_new: int = Field(description="units the store did not have")
    labels_new: int = Field(description="labels written (the others were there already)")
    criterion_created: bool
    dataset_created: bool = Field(description="False: the store had this dataset version already")


# --- writing -----------------------------------------------------------------------------------
def _line(record: BaseModel) -> str:
    return json.dumps(record.model_dump(mode="json"), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _digest(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()


def dataset_records(store: Store, criterion: str) -> DatasetFile:
    """Everything a criterion's ground-truth dataset needs, from the store (builds or finds its version).

    Raises:
        NotFoundError: unknown criterion.
        UsageError: no labels on it.
    """
    ds = build_dataset(store, criterion)
    crit = get_criterion(store, criterion)
    annotations = list_annotations(store, crit.name)
    if not annotations:
        raise UsageError(f"criterion {crit.name!r} has no labels to export (assay labels import)")
    unit_ids = sorted({a.unit_id for a in annotations} | {a.second_unit_id for a in annotations if a.second_unit_id})
    rows = {r.unit_id: r for r in store.unit_rows() if r.unit_id in set(unit_ids)}
    units = tuple(UnitRecord(unit_id=u.unit_id, kind=u.kind, source=u.source, outcome=u.outcome, reward=u.reward,
                             environment=rows[u.unit_id].env, release=rows[u.unit_id].release,
                             attributes=u.attributes, spans=u.spans) for u in store.units(unit_ids))
    labels = tuple(LabelRecord(**a.model_dump()) for a in annotations)
    head = CriterionRecord(name=crit.name, text=crit.text, version=crit.version, scale=crit.scale)
    sections = {"criterion": [_line(head)], "unit": [_line(u) for u in units], "label": [_line(x) for x in labels]}
    manifest = DatasetManifest(criterion=crit.name, criterion_version=crit.version, dataset_version=ds.version,
                               content_hash=ds.content_hash, items=len(ds.items),
                               counts={k: len(v) for k, v in sections.items()},
                               hashes={k: _digest(v) for k, v in sections.items()})
    return DatasetFile(manifest=manifest, criterion=head, units=units, labels=labels)


def export_dataset_file(store: Store, criterion: str, path: Path | str) -> DatasetManifest:
    """Write a criterion's ground-truth dataset as one self-contained JSON Lines file (module docstring);
    gzipped when the name ends in ``.gz``. The same store content always writes the same bytes.

    Raises:
        NotFoundError: unknown criterion.
        UsageError: no labels on it, or the path is a folder.
    """
    data = dataset_records(store, criterion)
    lines = [_line(data.manifest), _line(data.criterion), *map(_line, data.units), *map(_line, data.labels)]
    out = Path(path)
    if out.is_dir():
        raise UsageError(f"{out} is a folder: give a file name such as {out / (data.criterion.name + '.jsonl')}")
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n"
    if out.name.endswith(".gz"):
        out.write_bytes(gzip.compress(text.encode("utf-8"), mtime=0))
    else:
        out.write_text(text, encoding="utf-8")
    return data.manifest


# --- reading -----------------------------------------------------------------------------------
def _raw_lines(path: Path) -> list[str]:
    try:
        data = path.read_bytes()
        text = (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError) as exc:
        raise UsageError(f"{path}: cannot read a dataset file: {exc}") from exc
    return [line for line in text.splitlines() if line.strip()]


def _parsed(path: Path, lines: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in enumerate(lines, 1):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise UsageError(f"{path}: line {n} is not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or obj.get("record") not in ("manifest", *SECTIONS):
            raise UsageError(f"{path}: line {n} is not a dataset record (record: manifest, criterion, unit, label)")
        yield n, obj


def read_dataset_file(path: Path | str) -> DatasetFile:
    """Parse and check a dataset file: the manifest's format, the sections' counts and hashes.

    Raises:
        UsageError: missing, unreadable or not a dataset file; a section that does not match its hash
            (the file was edited or cut: export it again); a record that does not validate.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"no such file: {p}")
    lines = _raw_lines(p)
    records = list(_parsed(p, lines))
    if not records or records[0][1]["record"] != "manifest":
        raise UsageError(f"{p}: the first line must be the manifest (an assay dataset file, assay dataset export)")
    try:
        manifest = DatasetManifest.model_validate(records[0][1])
        sections: dict[str, list[tuple[int, dict[str, Any]]]] = {k: [] for k in SECTIONS}
        for n, obj in records[1:]:
            sections[obj["record"]].append((n, obj))
        _check_hashes(p, manifest, lines, sections)
        if len(sections["criterion"]) != 1:
            raise UsageError(f"{p}: expected one criterion line, found {len(sections['criterion'])}")
        return DatasetFile(manifest=manifest, criterion=CriterionRecord.model_validate(sections["criterion"][0][1]),
                           units=tuple(UnitRecord.model_validate(o) for _, o in sections["unit"]),
                           labels=tuple(LabelRecord.model_validate(o) for _, o in sections["label"]))
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        where = ".".join(str(x) for x in first["loc"])
        raise UsageError(f"{p}: invalid record ({where}: {first['msg']})") from None


def _check_hashes(path: Path, manifest: DatasetManifest, lines: list[str],
                  sections: dict[str, list[tuple[int, dict[str, Any]]]]) -> None:
    for name in SECTIONS:
        got = [lines[n - 1] for n, _ in sections[name]]
        if len(got) != manifest.counts.get(name) or _digest(got) != manifest.hashes.get(name):
            raise UsageError(f"{path}: the {name} lines do not match the manifest ({len(got)} lines, "
                             f"{manifest.counts.get(name)} expected, or other content): the file was edited or cut; "
                             "export it again with assay dataset export")


# --- importing ---------------------------------------------------------------------------------
def import_dataset_file(store: Store, path: Path | str) -> DatasetImport:
    """Rebuild a dataset file's units, criterion, labels and dataset version in ``store``, idempotently.

    Everything is checked before anything is written: the file (:func:`read_dataset_file`); the criterion
    (absent, or the same name, text and version); that the store's labels on it together with the file's
    rebuild exactly the manifest's dataset (a store holding other labels on the criterion would not); and
    that the dataset version is free or already holds this content. Units and labels already stored are
    skipped (a label is the same when unit, annotator, kind, label, severity, rationale, criterion version,
    source and time are).

    Raises:
        UsageError: any check above fails; the message says which and what to do.
    """
    data = read_dataset_file(path)
    m, crit = data.manifest, data.criterion
    existing = _existing_criterion(store, crit)
    have = list_annotations(store, crit.name) if existing else []
    keys = {_label_key(a) for a in have}
    fresh = [x.annotation() for x in data.labels if _label_key(x) not in keys]
    items, _, _ = consolidate_annotations([*have, *fresh], crit.version, crit.scale)
    _check_rebuilds(path, m, items, crit.scale)
    dataset_created = _check_version(store, m)
    units_new = _write_units(store, data.units)
    if not existing:
        with store.session() as s:
            s.add(CriterionRow(name=crit.name, text=crit.text, version=crit.version,
                               scale=criterion_scale_json(crit.scale)))
    add_annotations(store, fresh)
    if dataset_created:
        with store.session() as s:
            crit_id = s.scalar(select(CriterionRow.id).where(CriterionRow.name == crit.name))
            s.add(DatasetRow(version=m.dataset_version, content_hash=m.content_hash, criterion_id=crit_id,
                             items=[i.model_dump(mode="json") for i in items]))
    return DatasetImport(path=str(path), criterion=crit.name, criterion_version=crit.version,
                         dataset_version=m.dataset_version, content_hash=m.content_hash, units_new=units_new,
                         labels_new=len(fresh), criterion_created=existing is None, dataset_created=dataset_created)


def _existing_criterion(store: Store, crit: CriterionRecord) -> Criterion | None:
    """The store's criterion of that name when it matches the file's, None when absent.

    Raises:
        UsageError: it has other text, another version or another scale.
    """
    try:
        have = get_criterion(store, crit.name)
    except NotFoundError:
        return None
    if (have.text, have.version) != (crit.text, crit.version):
        other = " (the same number, other text)" if have.version == crit.version else ""
        raise UsageError(f"criterion {crit.name!r} is at version {have.version} in this store and at version "
                         f"{crit.version} in the file{other}: the labels would not mean the same; import into a "
                         "store without it, or export the dataset again from a store where both agree")
    if have.scale != crit.scale:
        raise UsageError(f"criterion {crit.name!r} is {have.scale.kind_name()} in this store ({have.scale.describe()}) "
                         f"and {crit.scale.kind_name()} in the file ({crit.scale.describe()}): the labels would not "
                         "mean the same; import into a store without it")
    return have


def _label_key(a: Annotation) -> tuple[Any, ...]:
    at = a.created_at.replace(tzinfo=None).isoformat() if a.created_at else None
    return (a.unit_id, a.second_unit_id, a.shown_order, a.annotator, a.annotator_kind, a.label, a.value, a.severity,
            a.rationale, a.criterion_version, a.source, a.blind, at)


def _check_rebuilds(path: Path | str, m: DatasetManifest, items: list[GroundTruthItem], scale: Scale) -> None:
    digest = dataset_hash(m.criterion, m.criterion_version, items, scale.kind == "binary")
    if digest != m.content_hash:
        raise UsageError(f"{path}: with the labels this store already holds on criterion {m.criterion!r}, the file's "
                         f"labels would not rebuild dataset version {m.dataset_version} ({len(items)} items, "
                         f"{m.items} expected): import into a store without other labels on it")


def _check_version(store: Store, m: DatasetManifest) -> bool:
    """True when the dataset version must be written, False when the store has it already.

    Raises:
        UsageError: the version number holds other content here, or this content has another number.
    """
    with store.session() as s:
        by_hash = s.scalar(select(DatasetRow).where(DatasetRow.content_hash == m.content_hash))
        by_version = s.get(DatasetRow, m.dataset_version)
    if by_hash is not None and by_hash.version != m.dataset_version:
        raise UsageError(f"this store holds the same dataset as version {by_hash.version}, the file as version "
                         f"{m.dataset_version}: a version names one content in every store; import into a fresh store")
    if by_hash is None and by_version is not None:
        raise UsageError(f"dataset version {m.dataset_version} is another dataset in this store: import into a "
                         "fresh store (versions are a sequence per store; the file's cannot be renumbered)")
    return by_hash is None


def _write_units(store: Store, records: Sequence[UnitRecord]) -> int:
    """Write the units (spans already stored are skipped) and their environment and release where the
    store has none; returns the number of units new to the store."""
    counts = store.add_units([r.unit() for r in records])
    with store.session() as s:
        for r in records:
            if r.environment:
                s.execute(update(UnitRow).where(UnitRow.unit_id == r.unit_id, UnitRow.env.is_(None))
                          .values(env=r.environment))
            if r.release:
                s.execute(update(UnitRow).where(UnitRow.unit_id == r.unit_id, UnitRow.release.is_(None))
                          .values(release=r.release))
    return counts.units_new
