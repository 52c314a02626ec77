"""Build and update failure signatures in the store, with stable ids.

Full build (:func:`build_signatures`): failed units -> structural keys and texts (their
signal evidence, :func:`~assay.signatures.evidence.evidence_text`, from the failure signals the
store keeps, :mod:`assay.signatures.stored`; with ``signature_text = "failure"`` also the steps
around them, with ``"key"`` the key text) -> cached embeddings -> clustering on text + key codes
(:func:`~assay.signatures.cluster.signature_labels`: average linkage cut at the best silhouette,
or the HDBSCAN passes) -> c-TF-IDF keywords and a label per cluster -> match to the stored
signatures (by member overlap, then by centroid) so ids are kept -> 2-D PCA map -> store. Units
alone in their group stay unclustered (``signature_id`` NULL, assignment ``noise``).

Incremental update (:func:`update_signatures`): failed units the signatures have not seen
are assigned to the nearest signature when inside its radius, else marked *new*; pending
new units that form a dense group of their own become new signatures. Nothing is
renumbered and no existing member moves.

Both also check the units they load against the rare-severe rules
(:mod:`assay.signatures.severe`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.tables import EmbeddingRow, MemberRow, SignatureRow, UnitRow, utcnow
from assay.settings import Settings
from assay.signals import FailureSignal, SignalSettings
from assay.signatures.cluster import (
    KEY_WEIGHT,
    Cluster,
    Shape,
    cluster_labels,
    clustering_space,
    joint_distance,
    make_clusters,
    match_clusters,
    match_members,
    nearest_cluster,
    project_2d,
    signature_labels,
)
from assay.signatures.embeddings import Progress, embed_texts, vector_from_bytes, vector_to_bytes
from assay.signatures.evidence import evidence_text, failure_text, lead_kind
from assay.signatures.impact import default_severity, unit_time
from assay.signatures.keys import StructuralKey, error_kind, key_text_from_steps, unit_key
from assay.signatures.labels import class_tfidf, distinct_label, make_label, name_clusters
from assay.signatures.listing import list_signatures
from assay.signatures.model import EmbeddingStats, Signature, UpdateResult
from assay.signatures.severe import scan_loaded
from assay.signatures.stored import detected, stored_signals
from assay.traces.model import Step, Unit
from assay.traces.timeline import step_timeline

LOAD_CHUNK = 250
"""Units loaded from the store at a time (bounds memory on large stores)."""

SignalMap = Mapping[str, Sequence[FailureSignal]]
"""Failure signals by unit id, as a store or a caller holds them."""


@dataclass
class Prepared:
    """The failed units of one build or update, parallel lists (spans already dropped)."""

    unit_ids: list[str]
    keys: list[StructuralKey]
    texts: list[str]
    leads: list[str | None]
    seen: list[datetime | None]
    severity: list[int]
    vectors: np.ndarray


def failed_unit_ids(store: Store, env: str | None = None) -> list[str]:
    """Ids of the units to cluster, sorted: the store's ``"failed"`` selection (the failure score of the
    unit's signals reaches ``[signals] fail_at``) within environment ``env`` (None: ``[environments]
    production``; ``all``: every environment), so evaluation and simulation runs never enter production
    signatures unless asked for."""
    scope = store.env_scope(env)
    return store.select_unit_ids("failed" if scope is None else f"failed,env:{scope.name}")


def unit_signals(units: Sequence[Unit], steps: Sequence[list[Step]], settings: Settings,
                 signals: SignalMap | None = None) -> list[list[FailureSignal]]:
    """Each unit's failure signals: those given in ``signals`` (by unit id), else what the
    detectors of :mod:`assay.signals` find on the unit alone (its recorded outcome included;
    population detectors such as ``long_session`` need a fitted population and stay silent).
    Builds and updates read the store's signals instead (:func:`signals_for`).

    Args:
        units, steps: parallel: the units and their step timelines.
        settings: ``signals`` (the detector settings) when present, else the defaults.
        signals: failure signals by unit id, e.g. as stored.
    """
    cfg = getattr(settings, "signals", None) or SignalSettings()
    known = signals or {}
    return [list(known[u.unit_id]) if u.unit_id in known else detected(u, t, cfg)
            for u, t in zip(units, steps, strict=True)]


def signals_for(store: Store, units: Sequence[Unit], steps: Sequence[list[Step]], settings: Settings,
                signals: SignalMap | None = None) -> list[list[FailureSignal]]:
    """The signals a build or update reads for each unit: ``signals`` when the caller gives them
    (:func:`unit_signals`), else the store's (:func:`~assay.signatures.stored.stored_signals`: every
    source, population detectors included; a never-scanned unit adds what the detectors find on it)."""
    if signals is not None:
        return unit_signals(units, steps, settings, signals)
    return stored_signals(store, units, steps, getattr(settings, "signals", None) or SignalSettings())


def unit_texts(units: Sequence[Unit], steps: Sequence[list[Step]], keys: Sequence[StructuralKey],
               settings: Settings, signals: SignalMap | None = None) -> list[str]:
    """The text embedded and labelled for each unit, as ``settings.signature_text`` says: its signal
    evidence (``"evidence"``, :func:`~assay.signatures.evidence.evidence_text` of :func:`unit_signals`),
    its failure-local text (``"failure"``, :func:`~assay.signatures.evidence.failure_text`) or its
    key text (``"key"``).

    Args:
        units, steps, keys: parallel: the units, their step timelines and structural keys.
        settings: ``signature_text`` (and ``signals``, the detector settings, when present).
        signals: failure signals by unit id (see :func:`unit_signals`).
    """
    return _texts(units, steps, keys, settings, unit_signals(units, steps, settings, signals))


def _texts(units: Sequence[Unit], steps: Sequence[list[Step]], keys: Sequence[StructuralKey], settings: Settings,
           found: Sequence[Sequence[FailureSignal]]) -> list[str]:
    if settings.signature_text == "key":
        return [key_text_from_steps(t, k) for t, k in zip(steps, keys, strict=True)]
    if settings.signature_text == "evidence":
        return [evidence_text(u, f, t) for u, f, t in zip(units, found, steps, strict=True)]
    return [failure_text(u, f, t) for u, f, t in zip(units, found, steps, strict=True)]


def prepare(store: Store, settings: Settings, unit_ids: list[str], progress: Progress | None = None,
            stats: EmbeddingStats | None = None, signals: SignalMap | None = None) -> Prepared:
    """Load units in chunks, compute keys, signals, texts (:func:`unit_texts`), times and
    default severities, check the severe rules, then embed the texts (cached).

    Args:
        store: the store (units read; severe flags and embeddings written).
        settings: ``severe`` rules, ``embedding_model`` and ``signature_text``.
        unit_ids: the units, in the order of the returned lists.
        progress, stats: see :func:`~assay.signatures.embed_texts`.
        signals: see :func:`signals_for`.

    Returns:
        :class:`Prepared`, vectors of shape ``(len(unit_ids), 384)`` for the default model.

    Raises:
        MissingDependency, ConfigError: the embedding model cannot be loaded.
    """
    out = Prepared(list(unit_ids), [], [], [], [], [], np.zeros((0, 0), np.float32))
    with store.session() as s:
        ingested = dict(s.execute(select(UnitRow.unit_id, UnitRow.ingested_at)).all())
    for start in range(0, len(unit_ids), LOAD_CHUNK):
        units = store.units(unit_ids[start:start + LOAD_CHUNK])
        steps = [step_timeline(u) for u in units]
        scan_loaded(store, settings.severe, units, steps)
        keys = [unit_key(u, t) for u, t in zip(units, steps, strict=True)]
        found = signals_for(store, units, steps, settings, signals)
        out.keys.extend(keys)
        out.texts.extend(_texts(units, steps, keys, settings, found))
        out.leads.extend(lead_kind(f) for f in found)
        out.seen.extend(unit_time(u, ingested.get(u.unit_id)) for u in units)
        out.severity.extend(default_severity(error_kind(t)) for t in steps)
    out.vectors = embed_texts(store, unit_ids, out.texts, settings.embedding_model, progress=progress, stats=stats)
    return out


def _stored_members(s: OrmSession) -> dict[int, set[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for unit_id, sid in s.execute(select(MemberRow.unit_id, MemberRow.signature_id)
                                  .where(MemberRow.signature_id.is_not(None))):
        if sid is not None:
            out[sid].add(unit_id)
    return out


def _fill(row: SignatureRow, cluster: Cluster, unit_ids: Sequence[str], model_name: str, now: datetime) -> None:
    row.structural_key, row.keywords, row.label = cluster.key.text, cluster.keywords, cluster.label
    row.size, row.representative_unit = len(cluster.members), unit_ids[cluster.members[0]]
    row.centroid, row.embedding_model, row.updated_at = vector_to_bytes(cluster.centroid), model_name, now


def _save_signatures(s: OrmSession, clusters: list[Cluster], unit_ids: Sequence[str], model_name: str) -> None:
    """Match clusters to stored signatures (members first, then centroids), then write them."""
    rows = {r.id: r for r in s.scalars(select(SignatureRow))}
    live = {sid: r for sid, r in rows.items() if r.status != "retired"}
    matches = match_members([{unit_ids[i] for i in c.members} for c in clusters],
                            {sid: m for sid, m in _stored_members(s).items() if sid in live})
    rest = [n for n in range(len(clusters)) if n not in matches]
    stored = {sid: vector_from_bytes(r.centroid) for sid, r in rows.items()
              if r.centroid and sid not in matches.values()}
    by_centroid = match_clusters([clusters[n].centroid for n in rest], stored)
    matches.update({rest[j]: sid for j, sid in by_centroid.items()})
    now = utcnow()
    for n, cluster in enumerate(clusters):
        row = rows.pop(matches[n]) if n in matches else SignatureRow(created_at=now)
        row.status = "existing" if n in matches else "new"
        _fill(row, cluster, unit_ids, model_name, now)
        s.add(row)
        s.flush()
        cluster.signature_id = row.id
    for row in rows.values():
        if row.status != "retired":
            row.status, row.size, row.updated_at = "retired", 0, now


def _save_members(s: OrmSession, prepared: Prepared, clusters: list[Cluster], xy: np.ndarray) -> None:
    s.execute(delete(MemberRow))
    where = {i: c for c in clusters for i in c.members}
    rows = [{"unit_id": unit_id, "signature_id": where[i].signature_id if i in where else None,
             "structural_key": prepared.keys[i].text, "distance": where[i].distances[i] if i in where else None,
             "x": float(xy[i, 0]), "y": float(xy[i, 1]), "seen_at": prepared.seen[i],
             "severity": prepared.severity[i], "assignment": "cluster" if i in where else "noise"}
            for i, unit_id in enumerate(prepared.unit_ids)]
    if rows:
        s.execute(insert(MemberRow), rows)


def _clusters(prepared: Prepared, labels: np.ndarray) -> list[Cluster]:
    """The clusters of a labelling with c-TF-IDF keywords (noise its own class) and leading signal."""
    keywords = class_tfidf(prepared.texts, [int(x) for x in labels])
    return make_clusters(prepared.vectors, labels, prepared.keys, keywords, prepared.leads)


def _cluster(prepared: Prepared, settings: Settings) -> tuple[list[Cluster], np.ndarray]:
    """The clusters of ``settings.signature_clustering``
    (:func:`~assay.signatures.cluster.signature_labels`), each named with a label no other cluster
    of its key has, and the clustering space. Clusters that no label tells apart are merged and
    everything is named again (each round removes a cluster)."""
    labels = signature_labels(prepared.vectors, prepared.keys, settings.min_cluster_size,
                              settings.signature_clustering)
    while True:
        clusters = _clusters(prepared, labels)
        merges = name_clusters(clusters)
        if not merges:
            return clusters, clustering_space(prepared.vectors, prepared.keys)
        for later, earlier in merges:
            labels[labels == labels[clusters[later].members[0]]] = labels[clusters[earlier].members[0]]


def build_signatures(store: Store, settings: Settings, progress: Progress | None = None, *,
                     stats: EmbeddingStats | None = None, signals: SignalMap | None = None,
                     env: str | None = None) -> list[Signature]:
    """Cluster the failed units of production (:func:`failed_unit_ids`; another environment, or ``all``,
    with ``env``) into failure signatures and store them.

    Units are grouped as ``settings.signature_clustering`` says
    (:func:`~assay.signatures.cluster.signature_labels`: by default average linkage over all of them
    cut where the mean silhouette is highest; ``density``: HDBSCAN, noise within a cluster's radius
    joins it, leftover noise grouped by average linkage); each
    signature gets a label that reads as a failure and that no other live signature with the
    same key has (:func:`~assay.signatures.labels.name_clusters`; clusters no label tells apart
    are merged).

    Replaces the stored membership. A cluster keeps a stored signature's id (status
    ``existing``) when it shares at least half its members (Jaccard >= 0.5) with it, else
    when its centroid has cosine similarity >= 0.9 with the stored one; other clusters get
    a new id (status ``new``); stored signatures no longer found become ``retired`` (size 0,
    kept for the criteria and annotations that point at them).

    Args:
        store: the store (reads units and annotations, writes signatures, members, severe
            flags and the embedding cache).
        settings: ``embedding_model``, ``min_cluster_size`` (HDBSCAN), ``signature_text``,
            ``signature_clustering`` and ``severe`` are used.
        progress: called with the number of units embedded (see :func:`embed_texts`).
        stats: when given, counts vectors computed vs. found in the cache, and encoding time.
        env: the environment clustered (None: ``[environments] production``; ``all``: every unit).
        signals: failure signals by unit id (default: the store's, see :func:`signals_for`).

    Returns:
        the signatures, ranked as by :func:`list_signatures`.

    Raises:
        MissingDependency: sentence-transformers or the embedding model is not installed.
        ConfigError: unknown embedding model.
    """
    prepared = prepare(store, settings, failed_unit_ids(store, env), progress, stats, signals)
    clusters, space = _cluster(prepared, settings)
    with store.session() as s:
        _save_signatures(s, clusters, prepared.unit_ids, settings.embedding_model)
        _save_members(s, prepared, clusters, project_2d(space))
    return list_signatures(store)


@dataclass
class _Live:
    """The live signatures as incremental assignment sees them, parallel lists."""

    ids: list[int]
    shapes: list[Shape]
    labels: list[str]


def _live_signatures(s: OrmSession, model_name: str) -> _Live:
    """Live signatures with a centroid of this model, their key, label and radius: the largest
    joint distance (:func:`~assay.signatures.cluster.joint_distance`) of a clustered member."""
    rows = [r for r in s.scalars(select(SignatureRow).where(SignatureRow.status != "retired")
                                 .order_by(SignatureRow.id)) if r.centroid and r.embedding_model == model_name]
    keys = {r.id: StructuralKey.from_text(r.structural_key) for r in rows}
    radius: dict[int, float] = {}
    for sid, member_key, distance in s.execute(select(MemberRow.signature_id, MemberRow.structural_key,
                                                      MemberRow.distance)
                                               .where(MemberRow.assignment == "cluster",
                                                      MemberRow.signature_id.is_not(None))):
        if sid in keys and distance is not None:
            d = joint_distance(float(distance), StructuralKey.from_text(member_key), keys[sid])
            radius[sid] = max(radius.get(sid, 0.0), d)
    shapes = [Shape(vector_from_bytes(r.centroid), keys[r.id], radius.get(r.id, 0.0)) for r in rows]  # type: ignore[arg-type]
    return _Live([r.id for r in rows], shapes, [r.label for r in rows])


def nearest_signature(vector: np.ndarray, key: StructuralKey, live: _Live) -> tuple[int, float, float] | None:
    """The nearest live signature by joint distance (:func:`~assay.signatures.cluster.nearest_cluster`):
    ``(id, joint distance, text distance)``, or None when there is none or the unit is outside its radius."""
    if not live.shapes or len(live.shapes[0].centroid) != len(vector):
        return None
    best = nearest_cluster(vector, key, live.shapes)
    if best is None:
        return None
    shape = live.shapes[best]
    text = float(1.0 - shape.centroid @ vector)
    return live.ids[best], joint_distance(text, key, shape.key), text


def _assign(s: OrmSession, prepared: Prepared, live: _Live) -> tuple[dict[str, int], list[str]]:
    """Add member rows for the prepared units: assigned to the nearest signature, or new."""
    assigned: dict[str, int] = {}
    new: list[str] = []
    for i, unit_id in enumerate(prepared.unit_ids):
        hit = nearest_signature(prepared.vectors[i], prepared.keys[i], live)
        if hit is not None:
            assigned[unit_id] = hit[0]
        else:
            new.append(unit_id)
        s.add(MemberRow(unit_id=unit_id, signature_id=hit[0] if hit else None, structural_key=prepared.keys[i].text,
                        distance=hit[2] if hit else None, seen_at=prepared.seen[i], severity=prepared.severity[i],
                        assignment="assigned" if hit else "new"))
    return assigned, new


def _pending(store: Store, settings: Settings, signals: SignalMap | None) -> Prepared:
    """The units marked new (any update), with keys, texts and cached vectors, for clustering."""
    with store.session() as s:
        rows = list(s.execute(select(MemberRow.unit_id, MemberRow.seen_at, MemberRow.severity)
                              .where(MemberRow.assignment == "new").order_by(MemberRow.unit_id)))
    ids = [r[0] for r in rows]
    units = store.units(ids)
    steps = [step_timeline(u) for u in units]
    keys = [unit_key(u, t) for u, t in zip(units, steps, strict=True)]
    found = signals_for(store, units, steps, settings, signals)
    texts = _texts(units, steps, keys, settings, found)
    vectors = embed_texts(store, ids, texts, settings.embedding_model)
    return Prepared(ids, keys, texts, [lead_kind(f) for f in found], [r[1] for r in rows],
                    [r[2] or 2 for r in rows], vectors)


def _context(s: OrmSession, model_name: str, exclude: set[str]) -> tuple[list[int | None], list[StructuralKey],
                                                                        np.ndarray]:
    """The known failed units other than ``exclude`` (members and noise) with a cached vector:
    ``(signature id or None, key, vector)`` lists, the density context for new groups."""
    cached = {r.unit_id: r.vector for r in s.scalars(select(EmbeddingRow).where(EmbeddingRow.model == model_name))}
    rows = [r for r in s.execute(select(MemberRow.unit_id, MemberRow.signature_id, MemberRow.structural_key)
                                 .order_by(MemberRow.unit_id)) if r[0] not in exclude and r[0] in cached]
    vectors = np.vstack([vector_from_bytes(cached[r[0]]) for r in rows]) if rows else np.zeros((0, 0), np.float32)
    return [r[1] for r in rows], [StructuralKey.from_text(r[2]) for r in rows], vectors


def _form_new(s: OrmSession, settings: Settings, pending: Prepared,
              now: datetime | None = None) -> tuple[list[int], dict[str, int]]:
    """Pending new units that HDBSCAN groups with no member of an existing signature, at least
    ``min_cluster_size`` of them, become a new signature.

    HDBSCAN runs on the pending units together with every known failed unit (members and
    noise), so a new group must be as dense, relative to the rest, as a full build requires.
    A group gets a label no live signature with its key has (:func:`_name_new`); a group no
    label tells apart from such a signature joins it instead.

    A new signature is created at ``now`` (default the wall clock).

    Returns:
        ``(new signature ids, {unit id: signature id} of units that joined a live one)``.
    """
    if len(pending.unit_ids) < max(2, settings.min_cluster_size):
        return [], {}
    sids, keys, vectors = _context(s, settings.embedding_model, set(pending.unit_ids))
    if len(sids) and vectors.shape[1] != pending.vectors.shape[1]:
        sids, keys, vectors = [], [], np.zeros((0, pending.vectors.shape[1]), np.float32)
    together = np.vstack([vectors, pending.vectors]) if len(sids) else pending.vectors
    labels = cluster_labels(clustering_space(together, [*keys, *pending.keys]), settings.min_cluster_size)
    taken = {int(x) for x, sid in zip(labels[:len(sids)], sids, strict=True) if sid is not None}
    own = labels[len(sids):].copy()
    for label in set(own.tolist()) - {-1}:
        if label in taken or int((own == label).sum()) < settings.min_cluster_size:
            own[own == label] = -1
    return _name_new(s, settings, pending, _clusters(pending, own), now or utcnow())


def _name_new(s: OrmSession, settings: Settings, pending: Prepared, clusters: list[Cluster],
              now: datetime) -> tuple[list[int], dict[str, int]]:
    """Store new clusters as new signatures, each labelled apart from the live signatures with
    its key; a cluster no label tells apart joins that signature (members ``assigned``)."""
    live = _live_signatures(s, settings.embedding_model)
    owner: dict[str, dict[str, int]] = defaultdict(dict)
    centroids = {sid: shape.centroid for sid, shape in zip(live.ids, live.shapes, strict=True)}
    for sid, shape, known in zip(live.ids, live.shapes, live.labels, strict=True):
        owner[shape.key.text][known] = sid
    created: list[int] = []
    joined: dict[str, int] = {}
    for cluster in clusters:
        same = owner[cluster.key.text]
        label = distinct_label(cluster.key, cluster.keywords, cluster.lead, same)
        if label is None:
            sid = same[make_label(cluster.key, cluster.keywords, cluster.lead)]
            for i in cluster.members:
                _member_to(s, pending.unit_ids[i], sid, float(1.0 - centroids[sid] @ pending.vectors[i]), "assigned")
                joined[pending.unit_ids[i]] = sid
            continue
        cluster.label = label
        row = SignatureRow(created_at=now, status="new")
        _fill(row, cluster, pending.unit_ids, settings.embedding_model, row.created_at)
        s.add(row)
        s.flush()
        created.append(row.id)
        same[label], centroids[row.id] = row.id, cluster.centroid
        for i in cluster.members:
            _member_to(s, pending.unit_ids[i], row.id, cluster.distances[i], "cluster")
    return created, joined


def _member_to(s: OrmSession, unit_id: str, signature_id: int, distance: float, assignment: str) -> None:
    member = s.get(MemberRow, unit_id)
    if member is not None:
        member.signature_id, member.distance, member.assignment = signature_id, distance, assignment


def _refresh(s: OrmSession, settings: Settings) -> None:
    """Recount signature sizes and recompute the 2-D map over all members (cached vectors)."""
    members = list(s.scalars(select(MemberRow).order_by(MemberRow.unit_id)))
    sizes: dict[int, int] = defaultdict(int)
    for m in members:
        if m.signature_id is not None:
            sizes[m.signature_id] += 1
    for row in s.scalars(select(SignatureRow).where(SignatureRow.status != "retired")):
        row.size = sizes.get(row.id, 0)
    vectors = {r.unit_id: vector_from_bytes(r.vector) for r in s.scalars(
        select(EmbeddingRow).where(EmbeddingRow.model == settings.embedding_model))}
    kept = [m for m in members if m.unit_id in vectors]
    if not kept:
        return
    space = clustering_space(np.vstack([vectors[m.unit_id] for m in kept]),
                             [StructuralKey.from_text(m.structural_key) for m in kept], KEY_WEIGHT)
    for m, (x, y) in zip(kept, project_2d(space), strict=True):
        m.x, m.y = float(x), float(y)


def update_signatures(store: Store, settings: Settings, progress: Progress | None = None, *,
                      stats: EmbeddingStats | None = None, signals: SignalMap | None = None,
                      env: str | None = None, now: datetime | None = None) -> UpdateResult:
    """Assign failed units the signatures have not seen yet, without renumbering anything.

    Each unseen failed unit goes to the nearest live signature (joint distance: text cosine
    distance to the centroid plus the key mismatch penalty) when that distance is within the
    signature's radius (the largest joint distance of a member clustered by the latest
    build); otherwise it is marked *new*. Then HDBSCAN runs on the pending new units together
    with all known failed units: a group holding no member of an existing signature and at
    least ``min_cluster_size`` pending units becomes a new signature (status ``new``, a fresh
    id) with a label no live signature of its key has, or, when no label tells the group apart
    from such a signature, joins it; the rest stay pending until the next update or full
    build. Before the first build every failed unit is new. (An update forms only dense
    groups; the covering passes of a build run on the next :func:`build_signatures`.)

    Args:
        store: the store, usually after :func:`build_signatures`.
        settings: as for :func:`build_signatures`.
        progress: called with the number of unseen units embedded.
        stats: embedding counts and time, added to.
        signals: failure signals by unit id (default: the store's, see :func:`signals_for`).
        env: the environment whose failed units are assigned (None: ``[environments] production``).
        now: when the update runs (a new signature's ``created_at``; default the wall clock): the online
            worker's pass time.

    Returns:
        what was assigned, left new, and formed.

    Raises:
        MissingDependency, ConfigError: the embedding model cannot be loaded.
    """
    with store.session() as s:
        known = set(s.scalars(select(MemberRow.unit_id)))
    unseen = [u for u in failed_unit_ids(store, env) if u not in known]
    prepared = prepare(store, settings, unseen, progress, stats, signals)
    with store.session() as s:
        assigned, _ = _assign(s, prepared, _live_signatures(s, settings.embedding_model))
    pending = _pending(store, settings, signals)
    with store.session() as s:
        created, joined = _form_new(s, settings, pending, now)
        assigned.update(joined)
        s.flush()
        if unseen or created or joined:
            _refresh(s, settings)
        still_new = list(s.scalars(select(MemberRow.unit_id).where(MemberRow.assignment == "new")
                                   .order_by(MemberRow.unit_id)))
    return UpdateResult(assigned=assigned, new_units=still_new, new_signatures=created)

