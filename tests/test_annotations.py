"""Labels and criteria: CSV/JSONL import with reasons for bad rows, append-only records, versioned criteria."""

from __future__ import annotations

from pathlib import Path

import pytest

from assay._store import Store
from assay.annotations import add_criterion, export_labels, import_labels, list_annotations
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
