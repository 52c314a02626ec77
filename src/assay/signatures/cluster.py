"""Cluster failed units into failure signatures and store them with stable ids.

Pipeline: failed units -> structural keys and key texts -> cached embeddings -> HDBSCAN
(Campello, Moulavi and Sander 2013, "Density-Based Clustering Based on Hierarchical Density
Estimates", PAKDD; ``sklearn.cluster.HDBSCAN``) -> c-TF-IDF keywords and a label per
cluster -> match to the stored signatures by centroid cosine similarity (ids kept) -> 2-D
PCA map -> store. Units HDBSCAN leaves as noise stay unclustered (``signature_id`` NULL).

HDBSCAN runs on the text embedding joined with one-hot codes of the structural key's tool
and error type, each scaled by :data:`KEY_WEIGHT`: two units with a different failed tool
are ``sqrt(2) * KEY_WEIGHT`` further apart than their texts alone say. On the 143 failed
tau-bench runs (airline + retail) the text alone gives 6 clusters and 92 noise units; with
the key codes, 9 signatures and 58 noise units, 95% of members sharing their signature's
key. Centroids, distances and review queues use the text embedding alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import delete, select
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.tables import MemberRow, SignatureRow, utcnow
from assay.settings import Settings
from assay.signatures.embeddings import Progress, embed_texts, vector_from_bytes, vector_to_bytes
from assay.signatures.keys import StructuralKey, key_from_steps, key_text_from_steps
from assay.signatures.labels import class_tfidf, make_label
from assay.signatures.listing import list_signatures
from assay.signatures.model import EmbeddingStats, Signature
from assay.traces.timeline import step_timeline

MATCH_THRESHOLD = 0.9
"""Cosine similarity of centroids at or above which a new cluster keeps a stored signature's id."""

KEY_WEIGHT = 0.5
"""Scale of the one-hot structural-key codes joined to the (unit-norm) text embedding."""

NOISE = -1


@dataclass
class _Cluster:
    """One HDBSCAN cluster of the current build (indices into the build's unit list)."""

    members: list[int]
    centroid: np.ndarray
    distances: dict[int, float]
    key: StructuralKey
    keywords: list[str]
    signature_id: int | None = None


@dataclass
class _Build:
    """Everything one build stores."""

    unit_ids: list[str]
    keys: list[StructuralKey]
    clusters: list[_Cluster]
    xy: np.ndarray
    model_name: str


def failed_unit_ids(store: Store) -> list[str]:
    """Ids of the units to cluster, sorted: the store's ``"failed"`` selection (outcome ``fail``,
    or outcome ``unknown`` with an error span; a recorded pass is never a failure)."""
    return store.select_unit_ids("failed")


def _one_hot(values: Sequence[str]) -> np.ndarray:
    levels = {v: j for j, v in enumerate(sorted(set(values)))}
    out = np.zeros((len(values), len(levels)), dtype=np.float32)
    out[np.arange(len(values)), [levels[v] for v in values]] = 1.0
    return out


def clustering_space(vectors: np.ndarray, keys: Sequence[StructuralKey], weight: float = KEY_WEIGHT) -> np.ndarray:
    """The text embeddings ``(n, d)`` joined with ``weight`` times one-hot codes of each key's
    tool and error type: shape ``(n, d + tools + error types)``."""
    if not len(keys):
        return vectors
    tools = _one_hot([k.tool or "" for k in keys])
    errors = _one_hot([k.error or "" for k in keys])
    return np.hstack([vectors, weight * tools, weight * errors])


def cluster_labels(vectors: np.ndarray, min_cluster_size: int) -> np.ndarray:
    """HDBSCAN labels (Euclidean metric; on L2-normalized vectors monotone in cosine distance).

    Returns:
        int array of shape ``(n,)``: cluster index >= 0, or -1 for noise. All noise when
        there are fewer units than ``min_cluster_size``.
    """
    size = max(2, min_cluster_size)
    if len(vectors) < size:
        return np.full(len(vectors), NOISE, dtype=int)
    from sklearn.cluster import HDBSCAN

    return np.asarray(HDBSCAN(min_cluster_size=size, metric="euclidean", copy=True).fit_predict(vectors))


def project_2d(vectors: np.ndarray) -> np.ndarray:
    """First two principal components (sklearn PCA) of the clustering space, shape ``(n, 2)``;
    zeros below 3 units."""
    if len(vectors) < 3:
        return np.zeros((len(vectors), 2))
    from sklearn.decomposition import PCA

    return np.asarray(PCA(n_components=2, svd_solver="full").fit_transform(vectors))


def _make_clusters(vectors: np.ndarray, labels: np.ndarray, keys: Sequence[StructuralKey],
                   texts: Sequence[str]) -> list[_Cluster]:
    """Clusters with centroid, member distances, dominant key and keywords; largest first."""
    keywords = class_tfidf(texts, [int(x) for x in labels])
    clusters = []
    for label in sorted(set(labels.tolist()) - {NOISE}):
        idx = [int(i) for i in np.flatnonzero(labels == label)]
        centroid = vectors[idx].mean(axis=0)
        centroid /= np.linalg.norm(centroid) or 1.0
        distances = {i: float(1.0 - vectors[i] @ centroid) for i in idx}
        idx.sort(key=lambda i: (distances[i], i))
        key = Counter(keys[i] for i in idx).most_common(1)[0][0]
        clusters.append(_Cluster(idx, centroid.astype(np.float32), distances, key, keywords.get(label, [])))
    return sorted(clusters, key=lambda c: (-len(c.members), min(c.members)))


def match_clusters(centroids: Sequence[np.ndarray], stored: dict[int, np.ndarray],
                   threshold: float = MATCH_THRESHOLD) -> dict[int, int]:
    """Match new cluster centroids to stored signature centroids, one to one, greedily by
    highest cosine similarity (vectors L2-normalized).

    Returns:
        ``{new cluster index: stored signature id}`` for pairs with similarity >= ``threshold``.
    """
    pairs = sorted(((float(c @ v), i, sid) for i, c in enumerate(centroids) for sid, v in stored.items()
                    if len(c) == len(v)), key=lambda p: (-p[0], p[1], p[2]))
    out: dict[int, int] = {}
    for similarity, i, sid in pairs:
        if similarity >= threshold and i not in out and sid not in out.values():
            out[i] = sid
    return out


def _save_signatures(s: OrmSession, build: _Build) -> None:
    rows = {r.id: r for r in s.scalars(select(SignatureRow))}
    stored = {sid: vector_from_bytes(r.centroid) for sid, r in rows.items() if r.centroid}
    matches = match_clusters([c.centroid for c in build.clusters], stored)
    now = utcnow()
    for n, cluster in enumerate(build.clusters):
        row = rows.pop(matches[n]) if n in matches else SignatureRow(created_at=now)
        row.status = "existing" if n in matches else "new"
        row.structural_key, row.keywords = cluster.key.text, cluster.keywords
        row.label = make_label(cluster.key.words, cluster.keywords)
        row.size, row.representative_unit = len(cluster.members), build.unit_ids[cluster.members[0]]
        row.centroid, row.embedding_model, row.updated_at = vector_to_bytes(cluster.centroid), build.model_name, now
        s.add(row)
        s.flush()
        cluster.signature_id = row.id
    for row in rows.values():
        if row.status != "retired":
            row.status, row.size, row.updated_at = "retired", 0, now


def _save_members(s: OrmSession, build: _Build) -> None:
    s.execute(delete(MemberRow))
    where = {i: c for c in build.clusters for i in c.members}
    for i, unit_id in enumerate(build.unit_ids):
        cluster = where.get(i)
        s.add(MemberRow(unit_id=unit_id, signature_id=cluster.signature_id if cluster else None,
                        structural_key=build.keys[i].text,
                        distance=cluster.distances[i] if cluster else None,
                        x=float(build.xy[i, 0]), y=float(build.xy[i, 1])))


def build_signatures(store: Store, settings: Settings, progress: Progress | None = None, *,
                     stats: EmbeddingStats | None = None) -> list[Signature]:
    """Cluster the failed units (:func:`failed_unit_ids`) into failure signatures and store them.

    Replaces the stored membership. A cluster whose centroid has cosine similarity >= 0.9
    with a stored signature keeps that signature's id (status ``existing``); others get a
    new id (status ``new``); stored signatures no longer found become ``retired`` (size 0,
    kept for the criteria and annotations that point at them).

    Args:
        store: the store (reads units, writes signatures, members and the embedding cache).
        settings: ``embedding_model`` and ``min_cluster_size`` (HDBSCAN) are used.
        progress: called with the number of units embedded (see :func:`embed_texts`).
        stats: when given, counts vectors computed vs. found in the cache.

    Returns:
        the signatures, ranked as by :func:`list_signatures`.

    Raises:
        MissingDependency: sentence-transformers or the embedding model is not installed.
        ConfigError: unknown embedding model.
    """
    unit_ids = failed_unit_ids(store)
    steps = [step_timeline(u) for u in store.units(unit_ids)]
    keys = [key_from_steps(s) for s in steps]
    texts = [key_text_from_steps(s) for s in steps]
    vectors = embed_texts(store, unit_ids, texts, settings.embedding_model, progress=progress, stats=stats)
    space = clustering_space(vectors, keys)
    labels = cluster_labels(space, settings.min_cluster_size)
    build = _Build(unit_ids, keys, _make_clusters(vectors, labels, keys, texts), project_2d(space),
                   settings.embedding_model)
    with store.session() as s:
        _save_signatures(s, build)
        _save_members(s, build)
    return list_signatures(store)
