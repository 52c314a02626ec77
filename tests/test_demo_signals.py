"""The demo's failure-signal stage: rates with their intervals, outcomes withheld before detection."""

from __future__ import annotations

import pytest

from assay._cli.demo_signals import Rate, detection, detections, roc_auc, show_blind_signals, withhold
from assay.settings.signals import SignalSettings
from assay.signals import detect_many
from assay.traces import read_file

from .conftest import DATA

RETAIL = DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_full.json"


def test_rates_say_n_and_the_wilson_interval() -> None:
    assert Rate(31, 50).text() == "0.62 [0.48, 0.74] (31/50)"
    assert Rate(0, 0).text() == "undefined (0/0)"
    row = detection("x", [True, True, False, True, False], [True, False, False, True, True])
    assert (row.flagged, row.precision.k, row.precision.n, row.recall.k, row.recall.n) == (3, 2, 3, 2, 3)


def test_withholding_hides_the_outcome_from_every_detector() -> None:
    units = read_file(RETAIL).units
    blind = [withhold(u) for u in units]
    assert all(u.outcome == "unknown" and u.reward is None and not u.attributes for u in blind)
    seen, hidden = detect_many(units), detect_many(blind)
    assert sum(s.kind == "outcome_fail" for sigs in seen for s in sigs) == sum(u.outcome == "fail" for u in units)
    assert hidden == [[s for s in sigs if s.source != "outcome"] for sigs in seen]


def test_the_stage_measures_every_kind_against_the_reward() -> None:
    units = read_file(RETAIL).units
    failed = [u.outcome == "fail" for u in units]
    rows = show_blind_signals(units, SignalSettings())
    by_name = {r.name: r for r in rows}
    anything = by_name["any signal at all"]
    assert rows[-1] is anything and anything.recall.n == sum(failed) == 27
    scored = next(r for r in rows if r.name.startswith("failure score >="))
    assert scored.flagged <= anything.flagged and scored.recall.k <= anything.recall.k
    kinds = [r for r in rows if r is not anything and r is not scored]
    assert kinds and [r.flagged for r in kinds] == sorted((r.flagged for r in kinds), reverse=True)
    signals = detect_many([withhold(u) for u in units])
    assert detections(signals, failed, SignalSettings()) == rows
    auc = roc_auc(signals, failed)
    assert auc is not None and 0.0 <= auc <= 1.0
    assert roc_auc(signals, [True] * len(units)) is None
    with pytest.raises(ValueError):
        detection("x", [True], [True, False])
