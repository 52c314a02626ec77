"""Failure signatures on real data: 300 tau-bench runs, the real embedding model, a real SQLite file."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select

import assay.signatures
from assay._store import Store
from assay._store.tables import EmbeddingRow, MemberRow, SignatureRow
from assay.exceptions import ConfigError, NotFoundError, UsageError
from assay.settings import Settings
from assay.signatures import (
    EmbeddingStats,
    Signature,
    StructuralKey,
    build_signatures,
    class_tfidf,
    embed_texts,
    error_type,
    failed_unit_ids,
    key_text,
    list_signatures,
    map_points,
    normalize_error,
    review_order,
    sample_queue,
    signature_members,
    structural_key,
)
from assay.signatures.cluster import (
    KEY_WEIGHT,
    cluster_shape,
    common_key,
    joint_distance,
    match_clusters,
    match_members,
    nearest_cluster,
)
from assay.signatures.embeddings import _kept, kept_encoder, model_dir, vector_to_bytes
from assay.signatures.evidence import SIGNAL_WORDS
from assay.signatures.impact import ERROR_KIND_SEVERITY, SEVERITY_WEIGHT
from assay.signatures.keys import error_kind, step_band
from assay.signatures.labels import readable
from assay.signatures.sample import round_robin
from assay.traces import Span, Unit, read_file, step_timeline

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
AIRLINE = DATA / "tau-bench-airline" / "historical_trajectories" / "gpt-4o-airline.json"
RETAIL = DATA / "agentrx" / "data" / "tau_retail" / "tau_dataset_full.json"
MODEL = "all-MiniLM-L6-v2"
SETTINGS = Settings.model_validate({})  # defaults: all-MiniLM-L6-v2, min_cluster_size 5


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    st = Store("sqlite:///" + str(tmp_path_factory.mktemp("sig") / "a.db"))
    st.add_units(read_file(AIRLINE).units + read_file(RETAIL).units)
    return st


@pytest.fixture(scope="module")
def first_build(store: Store) -> tuple[list[Signature], EmbeddingStats]:
    stats = EmbeddingStats()
    done: list[int] = []
    sigs = build_signatures(store, SETTINGS, progress=done.append, stats=stats)
    assert sum(done) == len(failed_unit_ids(store))
    return sigs, stats


def _count(store: Store, table: type) -> int:
    with store.session() as s:
        return int(s.scalar(select(func.count()).select_from(table)) or 0)


# --- keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(("raw", "normalized"), [
    ("Error: flight HAT030 not available on date 2024-05-20", "flight <ID> not available on date <DATE>"),
    ("Error: payment amount does not add up, total price is 375, but paid 299",
     "payment amount does not add up, total price is <NUM>, but paid <NUM>"),
    ("Error: not enough balance in payment method gift_card_8190333", "not enough balance in payment method <ID>"),
    ("Error: new item 3111466194 not found or available", "new item <ID> not found or available"),
    ('{"error": "Order #W2378156 not found"}', "order <ID> not found"),
    ("Traceback (most recent call last):\n  File 'x.py'\nKeyError: 'user 42'", "keyerror: 'user <NUM>'"),
    ("Nothing to summarize.\nTraceback (most recent call last):\n  File 'a.py', line 3\n    x()\n"
     "httpx.ReadTimeout: timed out\nFINAL ANSWER: 3", "httpx.readtimeout: timed out"),
    ("Error: user anna@example.com locked at 10:30", "user <EMAIL> locked at <TIME>"),
])
def test_normalize_error_masks_ids_dates_and_numbers(raw: str, normalized: str) -> None:
    assert normalize_error(raw) == normalized


def test_error_type_keeps_the_first_clause() -> None:
    assert error_type("Error: payment amount does not add up, total price is 375, but paid 299") \
        == "payment amount does not add up"
    assert error_type("openai.BadRequestError: Error code: 400 - {'error': {'inner_error': {'code': "
                      "'ResponsibleAIPolicyViolation', 'content_filter_results': {}}}}") \
        == "openai.badrequesterror: error code: <NUM> - error: inner_error: code: responsibleaipolicyviolation"
    assert error_type("Error: flight HAT223 not available on date 2024-05-14") \
        == error_type("Error: flight HAT030 not available on date 2024-05-13")


_TAIL = " | retrieval=none | outcome=fail"


@pytest.mark.parametrize(("unit_id", "key"), [
    ("tau-airline/task-0/trial-0", "tool=book_reservation | error=payment amount does not add up | step=17-32"),
    ("tau-airline/task-13/trial-0",
     "tool=update_reservation_flights | error=flight <ID> not available on date <DATE> | step=33-64"),
    ("tau-airline/task-1/trial-2", "tool=transfer_to_human_agents | error=none | step=17-32"),
    ("tau-retail/task-38/trial-38", "tool=find_user_id_by_email | error=user not found | step=5-8"),
])
def test_structural_key_of_real_failures(store: Store, unit_id: str, key: str) -> None:
    found = structural_key(store.unit(unit_id))
    assert found.text == key + _TAIL
    assert StructuralKey.from_text(found.text) == found


def test_failing_step_band_follows_the_failing_step(store: Store) -> None:
    unit = store.unit("tau-airline/task-0/trial-0")
    steps = step_timeline(unit)
    fail = next(s for s in reversed(steps) if s.is_error)
    assert structural_key(unit).step == step_band(fail.index)
    assert [step_band(i) for i in (1, 4, 5, 8, 9, 16, 17, 100)] == \
        ["1-4", "1-4", "5-8", "5-8", "9-16", "9-16", "17-32", "65-128"]


def _span(name: str, n: int, **fields: object) -> Span:
    return Span(trace_id="a" * 32, span_id=f"{n:016x}", name=name, start_ns=n * 10, end_ns=n * 10 + 5,
                **fields)  # type: ignore[arg-type]


def _rag_unit(documents: object, node: str = "grade") -> Unit:
    root = _span("rag run", 1, kind="agent")
    chain = _span(node, 2, kind="chain", parent_span_id=root.span_id)
    retrieve = _span("retrieve", 3, kind="retrieval", parent_span_id=chain.span_id, output_value="[]",
                     attributes={"retrieval.documents": documents} if documents is not None else {})
    answer = _span("chat", 4, kind="llm", parent_span_id=chain.span_id, status="error",
                   status_message="Error: context window exceeded at 12000 tokens")
    return Unit(unit_id=f"rag/{node}", kind="trace", source="test", spans=(root, chain, retrieve, answer),
                outcome="unknown")


@pytest.mark.parametrize(("documents", "state"), [
    ([], "miss"),
    ([{"document.id": "1", "document.score": 0.2}, {"document.id": "2", "document.score": 0.41}], "miss"),
    ([{"document.id": "1", "document.score": 0.2}, {"document.id": "2", "document.score": 0.8}], "ok"),
    ([{"document.id": "1", "document.score": 7.5}], "ok"),  # not a 0..1 score: not judged low
    (None, "miss"),  # no document attributes and an empty output
])
def test_retrieval_miss_and_workflow_node_in_the_key(documents: object, state: str) -> None:
    key = structural_key(_rag_unit(documents))
    assert key.retrieval == state
    assert key.step is not None and key.step.startswith("grade@")
    assert key.error == "context window exceeded at <NUM> tokens"
    assert key.outcome == "unknown"
    assert ("after a retrieval miss" in key.words) == (state == "miss")
    flat = _rag_unit(None).spans[2].model_copy(update={
        "output_value": "found", "attributes": {"retrieval.documents.0.document.score": 0.1,
                                                "retrieval.documents.1.document.score": 0.05}})
    assert structural_key(_rag_unit(None).model_copy(update={
        "spans": (*_rag_unit(None).spans[:2], flat, _rag_unit(None).spans[3])})).retrieval == "miss"


def test_common_key_marks_fields_without_a_majority() -> None:
    keys = [StructuralKey(tool="a", error=None, step="5-8"), StructuralKey(tool="a", error="x", step="9-16"),
            StructuralKey(tool="b", error="y", step="17-32")]
    common = common_key(keys)
    assert (common.tool, common.error, common.step) == ("a", "*", "*")
    assert common.words == "a failed: various errors"
    assert joint_distance(0.1, keys[0], common) == pytest.approx(0.1 + KEY_WEIGHT ** 2)
    assert joint_distance(0.1, keys[2], common) == pytest.approx(0.1 + 2 * KEY_WEIGHT ** 2)


def test_key_text_is_bounded_and_leaves_out_the_system_prompt(store: Store) -> None:
    for unit in store.units(failed_unit_ids(store)):
        text = key_text(unit)
        system = next(str(m.content) for s in unit.spans for m in s.input_messages if m.role == "system")
        assert 0 < len(text) <= 1500
        assert text.startswith(structural_key(unit).words)
        assert system[:200] not in text
        assert "Failing step: " in text


# --- clustering ------------------------------------------------------------------------


def test_every_failed_unit_is_in_one_signature_or_noise(store: Store, first_build: tuple) -> None:
    sigs, _ = first_build
    failed = failed_unit_ids(store)
    assert len(failed) == 116 + 27  # outcome fail; passed runs with a recovered tool error are not failures
    points = map_points(store)
    assert sorted(p[0] for p in points) == failed
    members = [u for s in sigs for u in s.unit_ids]
    assert len(members) == len(set(members)) == sum(s.size for s in sigs)
    noise = [p[0] for p in points if p[3] is None]
    assert noise, "a unit like no other stays unclustered, not forced into a signature"
    assert set(members) | set(noise) == set(failed) and not set(members) & set(noise)
    assert len(members) >= 0.7 * len(failed)  # the covering passes: HDBSCAN alone left 70 of 143 as noise
    assert len(sigs) >= 5


def test_a_noise_unit_is_outside_every_signature_radius(store: Store, first_build: tuple) -> None:
    sigs, _ = first_build
    by_id = {u: i for i, u in enumerate(failed_unit_ids(store))}
    with store.session() as s:
        cached = {r.unit_id: r.vector for r in s.scalars(select(EmbeddingRow))}
    vectors = np.vstack([np.frombuffer(cached[u], dtype="<f4") for u in by_id])
    keys = [structural_key(u) for u in store.units(list(by_id))]
    shapes = [cluster_shape(vectors, keys, np.array([by_id[u] for u in sig.unit_ids]), KEY_WEIGHT) for sig in sigs]
    noise = [p[0] for p in map_points(store) if p[3] is None]
    assert all(nearest_cluster(vectors[by_id[u]], keys[by_id[u]], shapes) is None for u in noise)


def test_no_two_signatures_share_key_and_label(store: Store, first_build: tuple) -> None:
    sigs, _ = first_build
    pairs = [(s.structural_key, s.label) for s in sigs]
    assert len(set(pairs)) == len(pairs)
    assert len({s.label for s in sigs}) > len({s.structural_key for s in sigs}) / 2


def test_signatures_are_ranked_labelled_and_consistent(store: Store, first_build: tuple) -> None:
    sigs, _ = first_build
    assert [s.impact for s in sigs] == sorted((s.impact for s in sigs), reverse=True)
    total = len(failed_unit_ids(store))
    for sig in sigs:
        assert sig.size >= 2  # HDBSCAN's dense clusters have min_cluster_size; leftover groups two or more
        assert sig.share == pytest.approx(sig.size / total)
        assert len(sig.keywords) >= 2 and sig.label
        assert sig.representative_unit == sig.unit_ids[0]
        assert signature_members(store, sig.id) == sig.unit_ids
        keys = [structural_key(u) for u in store.units(sig.unit_ids)]
        assert sig.structural_key == common_key(keys).text
        tool, count = Counter(k.tool or "none" for k in keys).most_common(1)[0]
        words = readable(common_key(keys).words)  # the key in words, after the leading signal ("tool error: ")
        head = sig.label.split(", about ")[0]
        assert head == words or head in {f"{signal}: {words}" for signal in SIGNAL_WORDS.values()}
        assert (sig.structural_key.startswith(f"tool={tool} |")) == (count >= sig.size / 2)
    assert all(s.status == "new" for s in sigs)


def test_impact_is_severity_weighted_volume(store: Store, first_build: tuple) -> None:
    sigs, _ = first_build
    for sig in sigs:
        steps = [step_timeline(u) for u in store.units(sig.unit_ids)]
        weights = [SEVERITY_WEIGHT[ERROR_KIND_SEVERITY[error_kind(s)]] for s in steps]
        # tau-bench has no timestamps: every unit is dated by its ingestion, seconds apart -> recency ~ 1
        assert sig.impact == pytest.approx(sum(weights), rel=1e-3)
        assert sig.severity == pytest.approx(sum(weights) / sig.size)
        assert sig.first_seen is not None and sig.last_seen is not None
        assert sig.first_seen <= sig.last_seen and sig.first_seen.tzinfo is not None
        assert sig.assigned == 0


def test_map_points_spread_in_two_dimensions(store: Store, first_build: tuple) -> None:
    xy = np.array([(x, y) for _, x, y, _ in map_points(store)])
    assert np.isfinite(xy).all()
    assert xy.std(axis=0).min() > 0.05


def test_first_build_embeds_every_failed_unit_once(store: Store, first_build: tuple) -> None:
    _, stats = first_build
    assert (stats.computed, stats.cached) == (143, 0)
    assert _count(store, EmbeddingRow) == 143


def test_rebuild_keeps_ids_and_computes_no_embedding(store: Store, first_build: tuple) -> None:
    before, _ = first_build
    stats = EmbeddingStats()
    after = build_signatures(store, SETTINGS, stats=stats)
    assert (stats.computed, stats.cached) == (0, 143)
    assert _count(store, EmbeddingRow) == 143
    assert [(s.id, s.unit_ids) for s in after] == [(s.id, s.unit_ids) for s in before]
    assert {s.status for s in after} == {"existing"}


def test_a_signature_no_longer_found_is_retired(store: Store, first_build: tuple) -> None:
    with store.session() as s:
        ghost = SignatureRow(structural_key="tool=x | error=none", label="x", keywords=[], size=3,
                             centroid=vector_to_bytes(np.full(384, 1 / np.sqrt(384))), status="new")
        s.add(ghost)
    sigs = build_signatures(store, SETTINGS)
    assert ghost.id not in {s.id for s in sigs}
    retired = [s for s in list_signatures(store, include_retired=True) if s.id == ghost.id]
    assert retired and retired[0].status == "retired" and retired[0].size == 0
    assert {s.id for s in sigs} == {s.id for s in first_build[0]}


def test_match_clusters_keeps_ids_above_threshold_only() -> None:
    rng = np.random.default_rng(0)
    a, b = (v / np.linalg.norm(v) for v in rng.normal(size=(2, 384)))
    drifted = a + 0.05 * b
    drifted /= np.linalg.norm(drifted)
    assert match_clusters([drifted, b], {7: a}) == {0: 7}
    assert match_clusters([b], {7: a}) == {}
    assert match_clusters([a, drifted], {7: a}) == {0: 7}  # one to one: the closer cluster wins


def test_match_members_keeps_ids_by_overlap() -> None:
    stored = {3: {"a", "b", "c", "d"}, 5: {"x", "y"}}
    assert match_members([{"a", "b", "c", "e"}, {"x", "z", "w", "v"}], stored) == {0: 3}  # 3/5 vs 1/5
    assert match_members([{"a", "b"}, {"a", "b", "c", "d"}], stored) == {1: 3}  # one to one: best overlap wins
    assert match_members([{"q"}], stored) == {}


def test_class_tfidf_prefers_terms_specific_to_a_class() -> None:
    docs = ["refund refund the flight", "refund flight", "baggage baggage flight", "baggage flight the"]
    top = class_tfidf(docs, [0, 0, 1, 1], top_n=2)
    assert top == {0: ["refund", "flight"], 1: ["baggage", "flight"]}
    assert "the" not in top[0] + top[1]
    contracted = class_tfidf(["it hasn't shipped, it hasn't", "we haven't refunded, weren't told"], [0, 1], top_n=3)
    assert not {"hasn", "haven", "weren"} & {w for words in contracted.values() for w in words}, contracted


def test_empty_store_builds_no_signature(tmp_path: Path) -> None:
    st = Store("sqlite:///" + str(tmp_path / "empty.db"))
    stats = EmbeddingStats()
    assert build_signatures(st, SETTINGS, stats=stats) == []
    assert (stats.computed, map_points(st)) == (0, [])


# --- embeddings ------------------------------------------------------------------------


def test_embedding_cache_recomputes_only_changed_texts(tmp_path: Path) -> None:
    st = Store("sqlite:///" + str(tmp_path / "e.db"))
    first = EmbeddingStats()
    v1 = embed_texts(st, ["a", "b"], ["flight not available", "payment does not add up"], MODEL, stats=first)
    second = EmbeddingStats()
    v2 = embed_texts(st, ["a", "b"], ["flight not available", "user not found"], MODEL, stats=second)
    assert (first.computed, second.computed, second.cached) == (2, 1, 1)
    assert v1.shape == (2, 384) and np.allclose(np.linalg.norm(v2, axis=1), 1.0, atol=1e-5)
    assert np.array_equal(v1[0], v2[0]) and not np.allclose(v1[1], v2[1])


def test_a_kept_encoder_loads_the_model_once_for_many_calls(tmp_path: Path) -> None:
    st = Store("sqlite:///" + str(tmp_path / "e.db"))
    with kept_encoder():
        embed_texts(st, ["a"], ["flight not available"], MODEL)
        children = _kept.get()
        assert children is not None and len(children) == 1
        [child] = children.values()
        pid = child.pid
        kept = embed_texts(st, ["b"], ["payment does not add up"], MODEL)
        assert pid is not None and child.pid == pid  # the same process served both calls
    assert child.pid is None and _kept.get() is None  # ended with the block
    fresh = embed_texts(st, ["c"], ["payment does not add up"], MODEL)
    assert np.allclose(kept, fresh, atol=1e-5)


def test_unknown_embedding_model_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown embedding model"):
        model_dir(str(tmp_path / "no-such-model"))
    assert (model_dir(MODEL) / "modules.json").is_file()


# --- review queue ----------------------------------------------------------------------


def test_sample_queue_is_deterministic_sized_and_within_the_signature(store: Store, first_build: tuple) -> None:
    sig = list_signatures(store)[0]
    queue = sample_queue(store, sig.id, 6)
    assert queue == sample_queue(store, sig.id, 6)
    assert len(queue) == len(set(queue)) == 6
    assert set(queue) <= set(sig.unit_ids)
    assert queue[:3] == sig.unit_ids[:3]  # half nearest the centroid
    assert sample_queue(store, sig.id, 1000) == sig.unit_ids
    spread = {tuple(sample_queue(store, sig.id, 6, seed=seed)[3:]) for seed in range(5)}
    assert len(spread) > 1


def test_sample_queue_rejects_unknown_signature_and_bad_size(store: Store, first_build: tuple) -> None:
    with pytest.raises(NotFoundError) as info:
        sample_queue(store, 99_999, 5)
    assert (info.value.kind, info.value.name) == ("signature", "99999")
    with pytest.raises(UsageError):
        sample_queue(store, list_signatures(store)[0].id, 0)


def test_review_order_takes_one_unit_of_each_signature_in_turn(store: Store, first_build: tuple) -> None:
    sigs = list_signatures(store)
    noise = sorted(p[0] for p in map_points(store) if p[3] is None)
    order = review_order(store, size=10, seed=3)
    assert sorted(order) == failed_unit_ids(store)  # every failed unit, once
    queues = [sample_queue(store, sig.id, 10, seed=3) for sig in sigs]
    first_round = order[:len(sigs) + 1]
    assert first_round[:-1] == [q[0] for q in queues]  # each representative, by impact
    assert first_round[-1] in noise  # then one unit like no other
    second = [q[1] for q in queues if len(q) > 1]
    assert order[len(sigs) + 1:len(sigs) + 1 + len(second)] == second
    assert order == review_order(store, size=10, seed=3)
    assert review_order(store, size=10, seed=4)[:len(sigs)] == first_round[:-1]  # the seed: spread and noise only
    flipped = review_order(store, size=10, seed=3, ranking=sigs[::-1])
    assert flipped[:len(sigs)] == [q[0] for q in queues[::-1]]
    with pytest.raises(UsageError):
        review_order(store, size=0)


def test_round_robin_skips_what_was_taken() -> None:
    assert round_robin([["a", "b", "c"], ["d"], [], ["b", "e"]]) == ["a", "d", "b", "e", "c"]
    assert round_robin([]) == []


def test_members_table_matches_signatures(store: Store, first_build: tuple) -> None:
    with store.session() as s:
        rows = list(s.scalars(select(MemberRow)))
    by_sig = Counter(r.signature_id for r in rows if r.signature_id is not None)
    assert by_sig == {s.id: s.size for s in list_signatures(store)}
    assert all((r.distance is None) == (r.signature_id is None) for r in rows)


def test_public_api_is_pinned() -> None:
    assert sorted(assay.signatures.__all__) == sorted([
        "MATCH_THRESHOLD", "EmbeddingStats", "Lifecycle", "LifecycleChange", "SevereFlag", "SevereItem", "Signature",
        "SignatureStatus", "StructuralKey", "UnseenModes", "UpdateResult", "WorkflowReport", "build_signatures",
        "class_tfidf", "embed_texts", "embed_units", "error_type", "failed_unit_ids", "failure_text", "flag_unit",
        "key_text", "lifecycle_history", "list_signatures", "load_encoder", "map_points", "new_units",
        "normalize_error", "review_order", "sample_queue", "scan_severe", "severe_queue", "signature_members",
        "structural_key", "unseen_modes", "update_lifecycle", "update_signatures", "workflow_report",
    ])
    assert all(hasattr(assay.signatures, name) for name in assay.signatures.__all__)
