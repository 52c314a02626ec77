"""Build and update failure signatures in the store, with stable ids.

Full build (:func:`build_signatures`): failed units -> structural keys and key texts ->
cached embeddings -> HDBSCAN on text + key codes (:mod:`assay.signatures.cluster`) ->
c-TF-IDF keywords and a label per cluster -> match to the stored signatures (by member
overlap, then by centroid) so ids are kept -> 2-D PCA map -> store. Units HDBSCAN leaves as
noise stay unclustered (``signature_id`` NULL, assignment ``noise``).

Incremental update (:func:`update_signatures`): failed units the signatures have not seen
are assigned to the nearest signature when inside its radius, else marked *new*; pending
new units that form a dense group of their own become new signatures. Nothing is
renumbered and no existing member moves.

Both also check the units they load against the rare-severe rules
(:mod:`assay.signatures.severe`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.tables import EmbeddingRow, MemberRow, SignatureRow, UnitRow, utcnow
from assay.settings import Settings
from assay.signatures.cluster import (
    KEY_WEIGHT,
    Cluster,
    cluster_labels,
    clustering_space,
    joint_distance,
    make_clusters,
    match_clusters,
    match_members,
    project_2d,
)
from assay.signatures.embeddings import Progress, embed_texts, vector_from_bytes, vector_to_bytes
from assay.signatures.impact import default_severity, unit_time
from assay.signatures.keys import StructuralKey, error_kind, key_text_from_steps, unit_key
from assay.signatures.labels import class_tfidf, make_label
from assay.signatures.listing import list_signatures
from assay.signatures.model import EmbeddingStats, Signature, UpdateResult
from assay.signatures.severe import scan_loaded
from assay.traces.timeline import step_timeline

LOAD_CHUNK = 250
"""Units loaded from the store at a time (bounds memory on large stores)."""


@dataclass
class Prepared:
    """The failed units of one build or update, parallel lists (spans already dropped)."""

    unit_ids: list[str]
    keys: list[StructuralKey]
    texts: list[str]
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


def prepare(store: Store, settings: Settings, unit_ids: list[str], progress: Progress | None = None,
            stats: EmbeddingStats | None = None) -> Prepared:
    """Load units in chunks, compute keys, key texts, times and default severities, check the
    severe rules, then embed the texts (cached).

    Args:
        store: the store (units read; severe flags and embeddings written).
        settings: ``severe`` rules and ``embedding_model``.
        unit_ids: the units, in the order of the returned lists.
        progress, stats: see :func:`~assay.signatures.embed_texts`.

    Returns:
        :class:`Prepared`, vectors of shape ``(len(unit_ids), 384)`` for the default model.

    Raises:
        MissingDependency, ConfigError: the embedding model cannot be loaded.
    """
    keys: list[StructuralKey] = []
    texts: list[str] = []
    seen: list[datetime | None] = []
    severity: list[int] = []
    with store.session() as s:
        ingested = dict(s.execute(select(UnitRow.unit_id, UnitRow.ingested_at)).all())
    for start in range(0, len(unit_ids), LOAD_CHUNK):
        units = store.units(unit_ids[start:start + LOAD_CHUNK])
        steps = [step_timeline(u) for u in units]
        scan_loaded(store, settings.severe, units, steps)
        for unit, timeline in zip(units, steps, strict=True):
            key = unit_key(unit, timeline)
            keys.append(key)
            texts.append(key_text_from_steps(timeline, key))
            seen.append(unit_time(unit, ingested.get(unit.unit_id)))
            severity.append(default_severity(error_kind(timeline)))
    vectors = embed_texts(store, unit_ids, texts, settings.embedding_model, progress=progress, stats=stats)
    return Prepared(unit_ids, keys, texts, seen, severity, vectors)


def _stored_members(s: OrmSession) -> dict[int, set[str]]:
    out: dict[int, set[str]] = defaultdict(set)
    for unit_id, sid in s.execute(select(MemberRow.unit_id, MemberRow.signature_id)
                                  .where(MemberRow.signature_id.is_not(None))):
        if sid is not None:
            out[sid].add(unit_id)
    return out


def _fill(row: SignatureRow, cluster: Cluster, unit_ids: Sequence[str], model_name: str, now: datetime) -> None:
    row.structural_key, row.keywords = cluster.key.text, cluster.keywords
    row.label = make_label(cluster.key.words, cluster.keywords)
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


def _cluster(prepared: Prepared, min_cluster_size: int) -> tuple[list[Cluster], np.ndarray]:
    """HDBSCAN clusters (with c-TF-IDF keywords, noise its own class) and the clustering space."""
    space = clustering_space(prepared.vectors, prepared.keys)
    labels = cluster_labels(space, min_cluster_size)
    keywords = class_tfidf(prepared.texts, [int(x) for x in labels])
    return make_clusters(prepared.vectors, labels, prepared.keys, keywords), space


def build_signatures(store: Store, settings: Settings, progress: Progress | None = None, *,
                     stats: EmbeddingStats | None = None, env: str | None = None) -> list[Signature]:
    """Cluster the failed units of production (:func:`failed_unit_ids`; another environment, or ``all``,
    with ``env``) into failure signatures and store them.

    Replaces the stored membership. A cluster keeps a stored signature's id (status
    ``existing``) when it shares at least half its members (Jaccard >= 0.5) with it, else
    when its centroid has cosine similarity >= 0.9 with the stored one; other clusters get
    a new id (status ``new``); stored signatures no longer found become ``retired`` (size 0,
    kept for the criteria and annotations that point at them).

    Args:
        store: the store (reads units and annotations, writes signatures, members, severe
            flags and the embedding cache).
        settings: ``embedding_model``, ``min_cluster_size`` (HDBSCAN) and ``severe`` are used.
        progress: called with the number of units embedded (see :func:`embed_texts`).
        stats: when given, counts vectors computed vs. found in the cache, and encoding time.
        env: the environment clustered (None: ``[environments] production``; ``all``: every unit).

    Returns:
        the signatures, ranked as by :func:`list_signatures`.

    Raises:
        MissingDependency: sentence-transformers or the embedding model is not installed.
        ConfigError: unknown embedding model.
    """
    prepared = prepare(store, settings, failed_unit_ids(store, env), progress, stats)
    clusters, space = _cluster(prepared, settings.min_cluster_size)
    with store.session() as s:
        _save_signatures(s, clusters, prepared.unit_ids, settings.embedding_model)
        _save_members(s, prepared, clusters, project_2d(space))
    return list_signatures(store)


@dataclass
class _Live:
    """The live signatures as incremental assignment sees them."""

    ids: list[int]
    keys: list[StructuralKey]
    centroids: np.ndarray
    radius: dict[int, float]


def _live_signatures(s: OrmSession, model_name: str) -> _Live:
    """Live signatures with a centroid of this model and their radius: the largest joint
    distance (:func:`~assay.signatures.cluster.joint_distance`) of a clustered member."""
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
    centroids = np.vstack([vector_from_bytes(r.centroid) for r in rows]) if rows else np.zeros((0, 0))  # type: ignore[arg-type]
    return _Live([r.id for r in rows], [keys[r.id] for r in rows], centroids, radius)


def nearest_signature(vector: np.ndarray, key: StructuralKey, live: _Live) -> tuple[int, float, float] | None:
    """The nearest live signature by joint distance: ``(id, joint distance, text distance)``,
    or None when there is none or the unit is outside its radius."""
    if not live.ids or live.centroids.shape[1] != len(vector):
        return None
    text = 1.0 - live.centroids @ vector
    joint = [joint_distance(float(d), key, k) for d, k in zip(text, live.keys, strict=True)]
    best = int(np.argmin(joint))
    sid = live.ids[best]
    if joint[best] > live.radius.get(sid, 0.0) + 1e-6:
        return None
    return sid, joint[best], float(text[best])


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


def _pending(store: Store, settings: Settings) -> Prepared:
    """The units marked new (any update), with keys, texts and cached vectors, for clustering."""
    with store.session() as s:
        rows = list(s.execute(select(MemberRow.unit_id, MemberRow.seen_at, MemberRow.severity)
                              .where(MemberRow.assignment == "new").order_by(MemberRow.unit_id)))
    ids = [r[0] for r in rows]
    units = store.units(ids)
    steps = [step_timeline(u) for u in units]
    keys = [unit_key(u, t) for u, t in zip(units, steps, strict=True)]
    texts = [key_text_from_steps(t, k) for t, k in zip(steps, keys, strict=True)]
    vectors = embed_texts(store, ids, texts, settings.embedding_model)
    return Prepared(ids, keys, texts, [r[1] for r in rows], [r[2] or 2 for r in rows], vectors)


def _context(s: OrmSession, model_name: str, exclude: set[str]) -> tuple[list[int | None], list[StructuralKey],
                                                                        np.ndarray]:
    """The known failed units other than ``exclude`` (members and noise) with a cached vector:
    ``(signature id or None, key, vector)`` lists, the density context for new groups."""
    cached = {r.unit_id: r.vector for r in s.scalars(select(EmbeddingRow).where(EmbeddingRow.model == model_name))}
    rows = [r for r in s.execute(select(MemberRow.unit_id, MemberRow.signature_id, MemberRow.structural_key)
                                 .order_by(MemberRow.unit_id)) if r[0] not in exclude and r[0] in cached]
    vectors = np.vstack([vector_from_bytes(cached[r[0]]) for r in rows]) if rows else np.zeros((0, 0), np.float32)
    return [r[1] for r in rows], [StructuralKey.from_text(r[2]) for r in rows], vectors


def _form_new(s: OrmSession, settings: Settings, pending: Prepared) -> list[int]:
    """Pending new units that HDBSCAN groups with no member of an existing signature, at least
    ``min_cluster_size`` of them, become a new signature.

    HDBSCAN runs on the pending units together with every known failed unit (members and
    noise), so a new group must be as dense, relative to the rest, as a full build requires.
    """
    if len(pending.unit_ids) < max(2, settings.min_cluster_size):
        return []
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
    clusters = make_clusters(pending.vectors, own, pending.keys, class_tfidf(pending.texts, [int(x) for x in own]))
    now = utcnow()
    created = []
    for cluster in clusters:
        row = SignatureRow(created_at=now, status="new")
        _fill(row, cluster, pending.unit_ids, settings.embedding_model, now)
        s.add(row)
        s.flush()
        created.append(row.id)
        for i in cluster.members:
            member = s.get(MemberRow, pending.unit_ids[i])
            if member is not None:
                member.signature_id, member.distance, member.assignment = row.id, cluster.distances[i], "cluster"
    return created


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
                      stats: EmbeddingStats | None = None, env: str | None = None) -> UpdateResult:
    """Assign failed units the signatures have not seen yet, without renumbering anything.

    Each unseen failed unit goes to the nearest live signature (joint distance: text cosine
    distance to the centroid plus the key mismatch penalty) when that distance is within the
    signature's radius (the largest joint distance of a member clustered by the latest
    build); otherwise it is marked *new*. Then HDBSCAN runs on the pending new units together
    with all known failed units: a group holding no member of an existing signature and at
    least ``min_cluster_size`` pending units becomes a new signature (status ``new``, a fresh
    id); the rest stay pending until the next update or full build. Before the first build
    every failed unit is new.

    Args:
        store: the store, usually after :func:`build_signatures`.
        settings: as for :func:`build_signatures`.
        progress: called with the number of unseen units embedded.
        stats: embedding counts and time, added to.
        env: the environment whose failed units are assigned (None: ``[environments] production``).

    Returns:
        what was assigned, left new, and formed.

    Raises:
        MissingDependency, ConfigError: the embedding model cannot be loaded.
    """
    with store.session() as s:
        known = set(s.scalars(select(MemberRow.unit_id)))
    unseen = [u for u in failed_unit_ids(store, env) if u not in known]
    prepared = prepare(store, settings, unseen, progress, stats)
    with store.session() as s:
        assigned, _ = _assign(s, prepared, _live_signatures(s, settings.embedding_model))
    pending = _pending(store, settings)
    with store.session() as s:
        created = _form_new(s, settings, pending)
        s.flush()
        if unseen or created:
            _refresh(s, settings)
        still_new = list(s.scalars(select(MemberRow.unit_id).where(MemberRow.assignment == "new")
                                   .order_by(MemberRow.unit_id)))
    return UpdateResult(assigned=assigned, new_units=still_new, new_signatures=created)

