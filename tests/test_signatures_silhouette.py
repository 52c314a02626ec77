"""The default clustering of a build (average linkage cut at the best silhouette, on the signal
evidence) on real failed tau-bench retail runs (microsoft/AgentRx), the real embedding model and a
real SQLite file; ``signature_clustering = "density"`` keeps the passes before it."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from assay._store import Store
from assay.settings import Settings
from assay.signatures import Signature, build_signatures, failed_unit_ids, map_points
from assay.signatures.build import prepare
from assay.signatures.cluster import cluster_shape, joint_distance, silhouette_labels
from assay.signatures.evidence import SIGNAL_WORDS
from assay.traces import read_file
from tests.conftest import DATA

FAILED = DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_failed.json"


def _build(path: Path, settings: Settings) -> tuple[Store, list[Signature], dict[str, int]]:
    store = Store("sqlite:///" + str(path))
    store.add_units([u.model_copy(update={"outcome": "fail"}) for u in read_file(FAILED).units])
    sigs = build_signatures(store, settings)
    groups = {uid: -1 if sid is None else int(sid) for uid, _, _, sid in map_points(store)}
    return store, sigs, groups


@pytest.fixture(scope="module")
def default(tmp_path_factory: pytest.TempPathFactory) -> tuple[Store, list[Signature], dict[str, int]]:
    return _build(tmp_path_factory.mktemp("sil") / "a.db", Settings.model_validate({}))


def test_default_build_covers_the_failed_runs_in_a_few_signatures(default: tuple) -> None:
    store, sigs, groups = default
    ids = failed_unit_ids(store)
    assert sorted(groups) == ids and len(ids) >= 29
    coverage = sum(g != -1 for g in groups.values()) / len(ids)
    assert coverage >= 0.7  # issue 17's goal; the density passes leave more units alone on these runs
    assert 2 <= len(sigs) <= len(ids) // 2
    assert sum(s.size for s in sigs) == sum(g != -1 for g in groups.values())


def test_default_build_is_the_silhouette_cut_of_the_evidence(default: tuple) -> None:
    store, sigs, groups = default
    prepared = prepare(store, Settings.model_validate({}), failed_unit_ids(store))
    assert all(line.split(":")[0] in {*SIGNAL_WORDS.values(), "how it ended"}
               for text in prepared.texts for line in text.splitlines()[:1])
    cut = silhouette_labels(prepared.vectors, prepared.keys)
    assert cut is not None
    stored = [groups[u] for u in prepared.unit_ids]
    # same partition (the label merge and close noise joins may only join groups of the cut)
    pairs = Counter(zip(cut.tolist(), stored, strict=True))
    assert all(len({s for (c, s) in pairs if c == label}) == 1 for label, _ in pairs if label != -1)


def test_a_unit_left_alone_is_outside_every_signature_radius(default: tuple) -> None:
    store, sigs, groups = default
    prepared = prepare(store, Settings.model_validate({}), failed_unit_ids(store))
    index = {u: i for i, u in enumerate(prepared.unit_ids)}
    shapes = [cluster_shape(prepared.vectors, prepared.keys, np.array([index[u] for u in s.unit_ids])) for s in sigs]
    for uid in (u for u, g in groups.items() if g == -1):
        i = index[uid]
        assert all(joint_distance(float(1 - sh.centroid @ prepared.vectors[i]), prepared.keys[i], sh.key) > sh.radius
                   for sh in shapes)


def test_labels_read_as_failures_and_never_repeat_within_a_key(default: tuple) -> None:
    _, sigs, _ = default
    assert len({(s.structural_key, s.label) for s in sigs}) == len(sigs)
    assert all(s.label.split(":")[0] in SIGNAL_WORDS.values() or s.label.startswith(("ended after", "failed"))
               for s in sigs)


def test_density_setting_keeps_the_passes_before(tmp_path: Path, default: tuple) -> None:
    _, sigs, groups = default
    _, dense, dense_groups = _build(tmp_path / "b.db", Settings.model_validate({"signature_text": "failure",
                                                                               "signature_clustering": "density"}))
    assert dense_groups.keys() == groups.keys()
    assert sum(g != -1 for g in dense_groups.values()) < sum(g != -1 for g in groups.values())
