"""The covering passes of a build (noise joins, leftover groups) and distinct labels, on vectors
whose distances are known, plus the update rule that a new group never repeats a live
signature's key and label (real SQLite file, real retail runs)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from assay._store import Store
from assay._store.tables import MemberRow, SignatureRow
from assay.settings import Settings
from assay.signatures.build import Prepared, _name_new
from assay.signatures.cluster import (
    GROUP_DISTANCE,
    NOISE,
    Cluster,
    clustering_space,
    cover_labels,
    group_noise,
    join_noise,
    signature_labels,
    silhouette_labels,
)
from assay.signatures.embeddings import vector_to_bytes
from assay.signatures.keys import StructuralKey
from assay.signatures.labels import distinct_label, make_label, name_clusters
from assay.traces import read_file
from tests.conftest import RETAIL

KEY = StructuralKey(tool="get_order_details", error="order not found")
OTHER = StructuralKey(tool="transfer_to_human_agents", error=None)


def unit(angle_deg: float, dim: int = 4) -> np.ndarray:
    """A unit vector in the first plane: cosine distance between two is 1 - cos(angle difference)."""
    v = np.zeros(dim, dtype=np.float32)
    v[0], v[1] = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    return v


def test_a_noise_unit_joins_the_nearest_cluster_only_within_its_radius() -> None:
    vectors = np.vstack([unit(0), unit(10), unit(20), unit(15), unit(60), unit(12)])
    keys = [KEY, KEY, KEY, KEY, KEY, OTHER]
    labels = np.array([0, 0, 0, NOISE, NOISE, NOISE])
    joined = join_noise(vectors, labels, keys)
    # 15 deg is inside the radius (the farthest member is 10 deg from the centroid at 10 deg);
    # 60 deg is outside; 12 deg is close in text but its key differs in both fields (+0.5)
    assert joined.tolist() == [0, 0, 0, 0, NOISE, NOISE]
    assert labels.tolist() == [0, 0, 0, NOISE, NOISE, NOISE]  # the input is not changed
    assert join_noise(vectors, np.full(6, NOISE), keys).tolist() == [NOISE] * 6  # no cluster: nothing to join


def test_silhouette_cut_groups_by_structure_not_by_a_fixed_distance() -> None:
    # two groups spread over 90 degrees (members up to cosine distance 1 apart), opposite each other
    vectors = np.vstack([unit(a) for a in (0, 45, 90, 180, 225, 270)])
    keys = [KEY] * 6
    assert silhouette_labels(vectors, keys).tolist() == [0, 0, 0, 1, 1, 1]
    assert signature_labels(vectors, keys, 5).tolist() == [0, 0, 0, 1, 1, 1]  # the default
    # the density passes cut at GROUP_DISTANCE: the ends of each group stay noise
    assert signature_labels(vectors, keys, 5, "density").tolist() == cover_labels(vectors, keys, 5).tolist()
    assert signature_labels(vectors, keys, 5, "density").tolist() == [NOISE, 0, 0, NOISE, 1, 1]


def test_silhouette_cut_leaves_a_unit_alone_as_noise_and_counts_the_key() -> None:
    vectors = np.vstack([unit(a) for a in (0, 4, 8, 12, 90, 94, 98, 102, 200)])
    assert silhouette_labels(vectors, [KEY] * 9).tolist() == [0, 0, 0, 0, 1, 1, 1, 1, NOISE]
    # same texts, two keys: the key codes split what the text alone joins
    close = np.vstack([unit(a) for a in (0, 5, 10, 12)])
    assert silhouette_labels(close, [KEY, KEY, OTHER, OTHER]).tolist() == [1, 1, 0, 0]


def test_without_structure_or_units_the_density_passes_decide() -> None:
    same = np.vstack([unit(0)] * 5)
    assert silhouette_labels(same, [KEY] * 5) is None  # every cut scores 0: no structure
    assert signature_labels(same, [KEY] * 5, 5).tolist() == [0] * 5  # density: one group
    two = np.vstack([unit(0), unit(3)])
    assert signature_labels(two, [KEY, KEY], 5).tolist() == cover_labels(two, [KEY, KEY], 5).tolist() == [0, 0]
    with pytest.raises(ValueError, match="unknown signature clustering"):
        signature_labels(two, [KEY, KEY], 5, "kmeans")


def test_leftover_noise_is_grouped_when_close_on_average() -> None:
    # cos 0.9 apart (distance 0.1): a group; 90 deg from both (distance 1): alone
    vectors = np.vstack([unit(0), unit(25.8), unit(90), unit(180)])
    keys = [KEY] * 4
    space = clustering_space(vectors, keys)
    grouped = group_noise(space, np.full(4, NOISE))
    assert grouped.tolist() == [0, 0, NOISE, NOISE]
    # the same texts with a different key: 0.1 + 0.25 + 0.25 = 0.6 > GROUP_DISTANCE
    mixed = group_noise(clustering_space(vectors, [KEY, OTHER, KEY, KEY]), np.full(4, NOISE))
    assert mixed.tolist() == [NOISE] * 4
    # existing clusters keep their labels; new groups are numbered after them
    assert group_noise(space, np.array([NOISE, NOISE, 0, NOISE])).tolist() == [1, 1, 0, NOISE]
    assert group_noise(space, np.full(4, NOISE), max_units=3).tolist() == [NOISE] * 4  # too many to group
    assert GROUP_DISTANCE == 0.5


def test_cover_groups_a_set_too_small_for_hdbscan() -> None:
    vectors = np.vstack([unit(a) for a in (0, 5, 10, 90, 95, 200)])
    keys = [KEY, KEY, KEY, OTHER, OTHER, OTHER]
    labels = cover_labels(vectors, keys, min_cluster_size=7)  # HDBSCAN: fewer units than 7, all noise
    assert labels.tolist() == [0, 0, 0, 1, 1, NOISE]
    assert cover_labels(np.zeros((0, 4), np.float32), [], 5).tolist() == []


def _cluster(key: StructuralKey, keywords: list[str], members: list[int], lead: str | None = "tool_error") -> Cluster:
    return Cluster(members, unit(0), {i: 0.0 for i in members}, key, keywords, lead)


def test_labels_read_as_a_failure_and_never_repeat_within_a_key() -> None:
    label = make_label(KEY, ["order", "refund", "exchange"], "tool_error")
    assert label == "tool error: get_order_details failed: order not found, about refund, exchange"
    assert make_label(OTHER, [], None) == "ended after transfer_to_human_agents without a tool error"
    taken = {label}
    assert distinct_label(KEY, ["order", "refund", "exchange"], "tool_error", set()) == label
    # "order" is in the label already: no further keyword can tell this one apart
    assert distinct_label(KEY, ["order", "refund", "exchange"], "tool_error", taken) is None
    other = distinct_label(KEY, ["refund", "exchange", "laptop"], "tool_error", taken)
    assert other == "tool error: get_order_details failed: order not found, about refund, exchange, laptop"
    assert distinct_label(KEY, ["refund", "exchange"], "tool_error", taken) is None
    masked = KEY.model_copy(update={"error": "payment amount does not add up, total price is <NUM>, order <ID>"})
    assert "<" not in make_label(masked, [], "tool_error") and "total price is N, order ID" in make_label(
        masked, [], "tool_error")


def test_clusters_no_label_tells_apart_are_merged() -> None:
    clusters = [_cluster(KEY, ["refund", "exchange"], [0, 1, 2]), _cluster(KEY, ["refund", "exchange"], [3, 4]),
                _cluster(KEY, ["refund", "exchange", "laptop"], [5, 6]),
                _cluster(OTHER, ["refund", "exchange"], [7, 8])]
    merges = name_clusters(clusters)
    assert merges == [(1, 0)]
    labels = [(c.key.text, c.label) for c in clusters if c.label]
    assert len(labels) == len(set(labels)) == 3
    assert clusters[2].label.endswith("about refund, exchange, laptop")


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    st = Store("sqlite:///" + str(tmp_path / "labels.db"))
    st.add_units(read_file(RETAIL).units[:4])
    return st


def test_a_new_group_with_a_live_signature_key_and_label_joins_it(store: Store) -> None:
    settings = Settings.model_validate({})
    ids = sorted(u.unit_id for u in read_file(RETAIL).units[:4])
    group = _cluster(KEY, [], [0, 1])
    with store.session() as s:
        live = SignatureRow(structural_key=KEY.text, label=make_label(KEY, [], "tool_error"), keywords=[], size=2,
                            centroid=vector_to_bytes(unit(0)), embedding_model=settings.embedding_model, status="new")
        s.add(live)
        s.flush()
        for uid in ids:
            s.add(MemberRow(unit_id=uid, signature_id=None, structural_key=KEY.text, assignment="new"))
        s.flush()
        pending = Prepared(ids[:2], [KEY, KEY], ["", ""], ["tool_error"] * 2, [None, None], [2, 2],
                           np.vstack([unit(0), unit(10)]))
        created, joined = _name_new(s, settings, pending, [group], datetime.now(UTC))
        assert created == [] and joined == {ids[0]: live.id, ids[1]: live.id}
        apart = _cluster(KEY, ["refund", "laptop"], [0, 1])  # keywords tell it apart: a new signature
        created, joined = _name_new(s, settings, pending, [apart], datetime.now(UTC))
        assert len(created) == 1 and joined == {}
        rows = {r.id: r for r in s.scalars(select(SignatureRow))}
        assert rows[created[0]].label == make_label(KEY, ["refund", "laptop"], "tool_error") != rows[live.id].label
    with store.session() as s:
        members = {m.unit_id: (m.signature_id, m.assignment) for m in s.scalars(select(MemberRow))}
    assert members[ids[0]] == (created[0], "cluster") and members[ids[2]] == (None, "new")
