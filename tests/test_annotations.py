"""Labels and criteria: CSV/JSONL import with reasons for bad rows, append-only records, versioned criteria."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from assay._store import Store
from assay.annotations import (
    Annotation,
    BinaryScale,
    CategoricalClass,
    CategoricalScale,
    OrdinalLevel,
    OrdinalScale,
    PairwiseScale,
    Scale,
    ScaleValue,
    add_annotations,
    add_criterion,
    export_labels,
    get_criterion,
    import_labels,
    list_annotations,
)
from assay.annotations.criteria import edit_criterion
from assay.annotations.items import canonical, consensus
from assay.calibration import build_dataset
from assay.exceptions import UsageError
from assay.traces import read_file

from .conftest import RETAIL


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    s = Store(f"sqlite:///{tmp_path / 'a.db'}")
    s.add_units(read_file(RETAIL).units[:5])
    return s


def test_csv_import_skips_bad_rows_with_reasons(store: Store, tmp_path: Path) -> None:
    add_criterion(store, "The agent authenticates the user first.", name="auth")
    ids = store.select_unit_ids()
    path = tmp_path / "labels.csv"
    path.write_text("unit,annotator,label,severity,rationale,criterion\n"
                    f"{ids[0]},ann,pass,,fine,auth\n"
                    f"{ids[1]},ann,fail,3,skipped authentication,auth\n"
                    f"{ids[2]},ann,maybe,,?,auth\n"
                    f"{ids[3]},ann,fail,9,too severe,auth\n"
                    f"{ids[4]},ann,fail,2,,nosuch\n")
    result = import_labels(store, path)
    assert result.imported == 2
    reasons = dict(result.skipped)
    assert set(reasons) == {4, 5, 6}
    assert "label" in reasons[4] and "severity" in reasons[5] and "unknown criterion" in reasons[6]
    csv_text = export_labels(store, "csv", criterion="auth")
    assert csv_text.count("\n") == 3 and "skipped authentication" in csv_text
    with pytest.raises(UsageError):
        export_labels(store, "xml")


def test_corrections_append_and_latest_label_counts(store: Store, tmp_path: Path) -> None:
    add_criterion(store, "Answers are correct.", name="correct")
    uid = store.select_unit_ids()[0]
    for label in ("pass", "fail"):
        (tmp_path / "l.jsonl").write_text(f'{{"unit": "{uid}", "annotator": "a", "label": "{label}", '
                                          f'"criterion": "correct"}}\n')
        import_labels(store, tmp_path / "l.jsonl")
    assert [a.label for a in list_annotations(store, "correct")] == ["pass", "fail"]
    ds = build_dataset(store, "correct")
    assert [(i.unit_id, i.label) for i in ds.items] == [(uid, "fail")]
    assert build_dataset(store, "correct").version == ds.version  # same content, same version


def test_editing_a_criterion_makes_old_labels_stale(store: Store, tmp_path: Path) -> None:
    crit = add_criterion(store, "Be polite.", name="polite")
    uid = store.select_unit_ids()[0]
    (tmp_path / "l.jsonl").write_text(f'{{"unit": "{uid}", "annotator": "a", "label": "pass", '
                                      f'"criterion": "polite"}}\n')
    import_labels(store, tmp_path / "l.jsonl")
    assert len(build_dataset(store, "polite").items) == 1
    edited = add_criterion(store, "Be polite and concise.", name="polite")
    assert edited.version == crit.version + 1
    ds = build_dataset(store, "polite")
    assert ds.items == () and ds.stale == 1


FIVE_LEVELS = OrdinalScale(levels=tuple(OrdinalLevel(value=v, anchor=a) for v, a in enumerate(
    ("unusable", "mostly wrong", "half right", "minor slips", "ready to ship"), 1)))
CATEGORIES = CategoricalScale(classes=(CategoricalClass(name="ok", description="no failure", score=1.0),
                                       CategoricalClass(name="Wrong tool"), CategoricalClass(name="Policy breach")))


def test_a_criterion_s_scale_is_versioned_with_it(store: Store) -> None:
    binary = add_criterion(store, "Helpful.", name="helpful")
    assert binary.scale == BinaryScale() and binary.version == 1
    ordinal = add_criterion(store, "Helpful.", name="helpful", scale=FIVE_LEVELS)
    assert ordinal.version == 2 and ordinal.scale == FIVE_LEVELS
    assert add_criterion(store, "Helpful.", name="helpful").version == 2  # no scale given: kept
    assert add_criterion(store, "Helpful.", name="helpful", scale=FIVE_LEVELS).version == 2
    assert get_criterion(store, "helpful").scale.kind == "ordinal"
    with pytest.raises(ValidationError, match="increasing"):
        OrdinalScale(levels=(OrdinalLevel(value=2, anchor="b"), OrdinalLevel(value=1, anchor="a")))
    with pytest.raises(ValidationError, match="named twice"):
        CategoricalScale(classes=(CategoricalClass(name="A"), CategoricalClass(name="a")))


def test_import_follows_each_scale_and_says_why_a_value_does_not_fit(store: Store, tmp_path: Path) -> None:
    ids = store.select_unit_ids()
    add_criterion(store, "Helpful.", name="helpful", scale=FIVE_LEVELS)
    add_criterion(store, "Which failure?", name="category", scale=CATEGORIES)
    add_criterion(store, "Which answer is better?", name="better", scale=PairwiseScale())
    rows = [
        {"unit": ids[0], "annotator": "a", "criterion": "helpful", "value": 4},
        {"unit": ids[1], "annotator": "a", "criterion": "helpful", "label": "2"},  # the label column holds levels
        {"unit": ids[2], "annotator": "a", "criterion": "helpful", "value": 7},
        {"unit": ids[2], "annotator": "a", "criterion": "helpful", "value": "pass"},
        {"unit": ids[0], "annotator": "a", "criterion": "category", "value": "wrong TOOL"},
        {"unit": ids[1], "annotator": "a", "criterion": "category", "value": "timeout"},
        {"unit": ids[0], "annotator": "a", "criterion": "better", "value": "tie", "second_unit": ids[1]},
        {"unit": ids[0], "annotator": "b", "criterion": "better", "label": "2", "second_unit": ids[1],
         "shown_order": "second-first"},
        {"unit": ids[0], "annotator": "c", "criterion": "better", "value": "first"},
        {"unit": ids[0], "annotator": "c", "criterion": "better", "value": "first", "second_unit": "nope"},
        {"unit": ids[0], "annotator": "c", "criterion": "helpful", "value": 3, "second_unit": ids[1]},
        {"unit": ids[0], "annotator": "c", "label": "first"},
    ]
    (tmp_path / "l.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    result = import_labels(store, tmp_path / "l.jsonl")
    assert result.imported == 5
    reasons = dict(result.skipped)
    assert reasons[3] == "value: 7 is not a value of this ordinal scale (levels 1..5)"
    assert reasons[4] == "value: 'pass' is not a value of this ordinal scale (levels 1..5)"
    assert reasons[6] == "value: 'timeout' is not a value of this categorical scale (ok, Wrong tool, Policy breach)"
    assert "second_unit (the second output's unit)" in reasons[9]
    assert reasons[10] == "unknown unit 'nope'"
    assert "belong to pairwise labels; this criterion is ordinal" in reasons[11]
    assert reasons[12] == "label: 'first' is not a value of this binary scale (pass, fail)"
    got = [(a.criterion, a.value, a.label, a.second_unit_id, a.shown_order) for a in list_annotations(store)]
    assert got == [("helpful", 4, None, None, None), ("helpful", 2, None, None, None),
                   ("category", "Wrong tool", None, None, None), ("better", "tie", None, ids[1], None),
                   ("better", "second", None, ids[1], "second-first")]
    exported = [json.loads(line) for line in export_labels(store, "jsonl", "better").splitlines()]
    assert [(r["value"], r["second_unit"], r["shown_order"]) for r in exported] == [
        ("tie", ids[1], None), ("second", ids[1], "second-first")]
    csv_path = tmp_path / "again.csv"
    csv_path.write_text(export_labels(store, "csv"))
    again = import_labels(store, csv_path)  # CSV round trip: the values fit again, to the very same labels
    assert (again.imported, again.skipped, len(again.duplicates)) == (0, [], 5)
    assert [a.value for a in list_annotations(store)] == [4, 2, "Wrong tool", "tie", "second"]


def test_importing_the_same_labels_twice_writes_them_once(store: Store, tmp_path: Path) -> None:
    ids = store.select_unit_ids()
    add_criterion(store, "Resolves the request.", name="resolves")
    rows = [{"unit": ids[0], "annotator": "ann", "criterion": "resolves", "label": "fail", "severity": 3,
             "rationale": "refused the refund"},
            {"unit": ids[1], "annotator": "ann", "criterion": "resolves", "label": "pass"},
            {"unit": ids[1], "annotator": "ann", "criterion": "resolves", "label": "pass"}]  # repeated in the file
    path = tmp_path / "l.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first = import_labels(store, path)
    assert (first.imported, first.duplicates) == (2, [3])
    second = import_labels(store, path)
    assert (second.imported, second.duplicates, second.skipped) == (0, [1, 2, 3], [])
    changed = [{**rows[0], "label": "pass", "severity": None}, {**rows[1], "annotator": "other"},
               {"unit": ids[2], "criterion": "resolves", "label": "pass"},  # who made it? refused
               {"unit": ids[2], "annotator": " ", "criterion": "resolves", "label": "pass"},
               {"unit": ids[2], "annotator": "ann", "criterion": "resolves", "label": "pass", "value": "fail"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in changed))
    third = import_labels(store, path)  # a changed judgment, another annotator: new labels
    assert (third.imported, third.duplicates) == (2, [])
    assert [(n, r.split(";")[0]) for n, r in third.skipped] == [
        (3, "annotator: missing"), (4, "annotator: missing"),
        (5, "label and value disagree ('pass' vs 'fail'): give one of them")]
    assert [(a.unit_id, a.annotator, a.label) for a in list_annotations(store)] == [
        (ids[0], "ann", "fail"), (ids[1], "ann", "pass"), (ids[0], "ann", "pass"), (ids[1], "other", "pass")]
    edit_criterion(store, "resolves", "Resolves the request the user made, by the policy.")  # version 2
    path.write_text("".join(json.dumps(r) + "\n" for r in rows[:2]))
    reaffirmed = import_labels(store, path)  # the same judgments, made again under version 2: new labels
    assert (reaffirmed.imported, reaffirmed.duplicates) == (2, [])
    assert [a.criterion_version for a in list_annotations(store)][-2:] == [2, 2]
    assert import_labels(store, path).duplicates == [1, 2]


def test_add_annotations_checks_the_scale(store: Store) -> None:
    ids = store.select_unit_ids()
    add_criterion(store, "Helpful.", name="helpful", scale=FIVE_LEVELS)
    with pytest.raises(UsageError, match="not a value of this ordinal scale"):
        add_annotations(store, [Annotation(unit_id=ids[0], annotator="a", value=6, criterion="helpful")])
    with pytest.raises(UsageError, match="binary scale"):
        add_annotations(store, [Annotation(unit_id=ids[0], annotator="a", value=3)])
    with pytest.raises(ValidationError, match="needs a label"):
        Annotation(unit_id=ids[0], annotator="a")
    assert list_annotations(store) == []


def test_pairwise_items_are_one_item_in_either_order(store: Store) -> None:
    a, b = sorted(store.select_unit_ids()[:2])
    add_criterion(store, "Better?", name="better", scale=PairwiseScale())
    add_annotations(store, [
        Annotation(unit_id=a, second_unit_id=b, annotator="x", value="first", criterion="better"),
        Annotation(unit_id=b, second_unit_id=a, annotator="y", value="second", criterion="better",
                   shown_order="first-second"),
        Annotation(unit_id=b, second_unit_id=a, annotator="z", value="first", criterion="better")])
    flipped = canonical(list_annotations(store)[1])
    assert (flipped.unit_id, flipped.value, flipped.shown_order) == (a, "first", "second-first")
    ds = build_dataset(store, "better")
    assert [(i.key, i.value, i.annotators) for i in ds.items] == [(f"{a} vs {b}", "first", ("x", "y", "z"))]
    assert ds.scale_kind == "pairwise" and ds.balance == {"first": 1}


@pytest.mark.parametrize(("values", "scale", "expected"), [
    ([3, 4, 5], FIVE_LEVELS, 4), ([3, 4], FIVE_LEVELS, None), ([4, 4, 1, 2], FIVE_LEVELS, None),
    ([2, 2, 5, 5, 5], FIVE_LEVELS, 5), (["pass", "fail", "fail"], BinaryScale(), "fail"),
    (["pass", "fail"], BinaryScale(), None), (["first", "tie", "first"], PairwiseScale(), "first"),
    ([], BinaryScale(), None),
])
def test_consensus_is_the_majority_or_the_median_level(values: list[ScaleValue], scale: Scale,
                                                        expected: ScaleValue | None) -> None:
    assert consensus(values, scale) == expected


def test_a_taken_criterion_name_is_refused_and_never_versions_another_criterion(store: Store) -> None:
    from assay.annotations.criteria import create_criterion, edit_criterion
    from assay.exceptions import NameTaken

    first = create_criterion(store, "Tool calls are valid.", name="tool-calls-valid")
    with pytest.raises(NameTaken, match="tool-calls-valid") as taken:
        create_criterion(store, "Something else entirely.", name="tool-calls-valid")
    assert taken.value.existing_id == first.id
    assert get_criterion(store, "tool-calls-valid").version == 1  # the refused text made no new version
    assert edit_criterion(store, str(first.id), "Tool calls are valid JSON.").version == 2
    with pytest.raises(UsageError, match="name and a text"):
        create_criterion(store, "text", name="  ")


def _label(unit: str, who: str, value: str, severity: int | None = None, blind: bool | None = None) -> Annotation:
    return Annotation(unit_id=unit, annotator=who, label=value, severity=severity, criterion="c",  # type: ignore[arg-type]
                      criterion_version=1, blind=blind)


def test_agreement_uses_the_one_overlapping_pair_counts_shared_items_and_marks_severity_only() -> None:
    from assay.annotations import Criterion
    from assay.annotations.agreement import human_agreement

    crit = Criterion(id=1, name="c", text="t", version=2)
    labels = [_label(f"u{i}", "alice", v, 2, blind=True) for i, v in enumerate(["pass", "fail", "pass", "fail"])]
    labels += [_label(f"u{i}", "bob", v, 3 if i == 0 else 2, blind=i != 1)
               for i, v in enumerate(["pass", "fail", "fail", "fail"])]
    labels += [_label("u9", "imported", "pass")]  # a third annotator who overlaps with nobody
    labels = [a.model_copy(update={"criterion_version": 2}) for a in labels]
    labels += [_label("u0", "alice", "fail")]  # version 1: stale, left out
    report = human_agreement(labels, crit, n_boot=50)
    assert report.annotators == ["alice", "bob", "imported"]
    assert report.kappa is not None and report.kappa == pytest.approx(0.5)
    assert [(p.first, p.second, p.n) for p in report.pairs if p.n] == [("alice", "bob", 4)]
    assert report.n_units == 4 and report.single_items == 1 and report.stale_labels == 1
    assert sum(report.overlap_distribution.values()) == 8 and sum(report.distribution.values()) == 9
    assert {d.unit_id: d.kind for d in report.disagreements} == {"u0": "severity", "u2": "verdict"}
    assert report.not_blind_labels == 1


def test_a_criterion_is_never_moved_to_another_signature_and_stale_labels_return_to_their_annotator(
        tmp_path: Path) -> None:
    from assay.annotations.criteria import cover_signature, stale_impact
    from assay.annotations.queue import claim_next, queue_status, set_queue, signature_criterion
    from assay.exceptions import NameTaken

    from .ui_fixtures import seed, seed_scales

    store = Store(f"sqlite:///{tmp_path / 'q.db'}")
    seed(store)
    seed_scales(store)
    amounts = add_criterion(store, "The amount matches the fare.", name="amounts", signature_id=1)
    with pytest.raises(NameTaken, match="signature 1"):  # the CLI's path: same name, another signature
        add_criterion(store, "Unrelated text.", name="amounts", signature_id=3)
    quality = signature_criterion(store, 3)
    assert get_criterion(store, "amounts") == amounts and quality is not None and quality.name == "quality"
    with pytest.raises(UsageError, match="has criterion 'quality'"):
        cover_signature(store, "amounts", 3)

    set_queue(store, 1, size=3, k=1)
    first = queue_status(store, 1).items[0].unit_id
    add_annotations(store, [Annotation(unit_id=first, annotator="ann", label="pass", criterion="amounts")])
    assert queue_status(store, 1).items[0].annotators == ["ann"]
    assert stale_impact(store, amounts).labels == {"ann": 1}
    add_criterion(store, "The amount matches the fare plus fees.", name="amounts")  # version 2
    item = queue_status(store, 1).items[0]
    assert (item.annotators, item.stale) == ([], ["ann"])  # not done, theirs to label again
    add_annotations(store, [Annotation(unit_id=first, annotator="admin", label="pass", criterion="amounts")])
    assert claim_next(store, 1, "ann") == first  # K=1 reached by admin, still handed back to ann
