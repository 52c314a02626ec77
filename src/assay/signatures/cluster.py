"""The clustering math of failure signatures: pure functions on arrays, no store.

HDBSCAN (Campello, Moulavi and Sander 2013, "Density-Based Clustering Based on Hierarchical
Density Estimates", PAKDD; ``sklearn.cluster.HDBSCAN``) runs on the text embedding joined
with one-hot codes of the structural key's tool and error type, each scaled by
:data:`KEY_WEIGHT`: two units with a different failed tool are ``sqrt(2) * KEY_WEIGHT``
further apart than their texts alone say. In cosine terms (text vectors are unit-norm),
each differing key field adds ``KEY_WEIGHT ** 2`` to the distance: see :func:`joint_distance`.
On the 143 failed tau-bench runs (airline + retail) the text alone gives 6 clusters and 92
noise units; with the key codes, 9 signatures and 58 noise units. Units HDBSCAN leaves as
noise stay unclustered. Centroids, stored distances and review queues use the text
embedding alone.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from assay.signatures.keys import StructuralKey

MATCH_THRESHOLD = 0.9
"""Cosine similarity of centroids at or above which a new cluster keeps a stored signature's id."""

OVERLAP_THRESHOLD = 0.5
"""Jaccard overlap of members at or above which a new cluster keeps a stored signature's id."""

KEY_WEIGHT = 0.5
"""Scale of the one-hot structural-key codes joined to the (unit-norm) text embedding."""

MIXED = "*"
"""A signature key field whose value no majority of members shares."""

NOISE = -1


@dataclass
class Cluster:
    """One cluster of a build: indices into the build's unit list, nearest the centroid first.

    ``centroid`` is the L2-normalized mean text embedding, shape ``(d,)``; ``distances`` maps
    member index to cosine distance from it (0..2); ``key`` is the members' common key
    (:func:`common_key`).
    """

    members: list[int]
    centroid: np.ndarray
    distances: dict[int, float]
    key: StructuralKey
    keywords: list[str]
    signature_id: int | None = None


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
    return np.hstack([vectors, weight * tools, weight * errors]).astype(np.float32)


def joint_distance(text_distance: float, key: StructuralKey, reference: StructuralKey,
                   weight: float = KEY_WEIGHT) -> float:
    """Cosine distance in the clustering space: the text distance plus ``weight ** 2`` for each
    of tool and error type that differs from ``reference`` (a :data:`MIXED` field always differs)."""
    mismatches = (key.tool != reference.tool or reference.tool == MIXED) + \
                 (key.error != reference.error or reference.error == MIXED)
    return text_distance + weight ** 2 * mismatches


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
    zeros below 3 units. Exact: eigendecomposition of the ``(d, d)`` covariance, so the cost
    grows linearly with ``n``."""
    if len(vectors) < 3:
        return np.zeros((len(vectors), 2))
    from sklearn.decomposition import PCA

    return np.asarray(PCA(n_components=2, svd_solver="covariance_eigh").fit_transform(vectors))


def common_key(keys: Sequence[StructuralKey], share: float = 0.5) -> StructuralKey:
    """The key members share, field by field: the most common value of each field when at
    least ``share`` of the members have it, else :data:`MIXED`."""
    def field(values: list[str | None]) -> str | None:
        value, count = Counter(values).most_common(1)[0]
        return value if count >= share * len(values) else MIXED

    step = field([k.step for k in keys])
    retrieval = field([k.retrieval for k in keys])
    return StructuralKey(tool=field([k.tool for k in keys]), error=field([k.error for k in keys]), step=step,
                         retrieval=retrieval if retrieval in ("none", "ok", "miss") else "none",
                         outcome=field([k.outcome for k in keys]) or "fail")


def make_clusters(vectors: np.ndarray, labels: np.ndarray, keys: Sequence[StructuralKey],
                  keywords: dict[int, list[str]]) -> list[Cluster]:
    """Clusters of one labelling with centroid, member distances, common key and keywords;
    largest first (ties: lowest first member index).

    Args:
        vectors: text embeddings ``(n, d)``, rows L2-normalized.
        labels: cluster per row, ``(n,)``, -1 for noise.
        keys: structural key per row.
        keywords: ``{label: keywords}`` (:func:`~assay.signatures.labels.class_tfidf`).
    """
    clusters = []
    for label in sorted(set(labels.tolist()) - {NOISE}):
        idx = [int(i) for i in np.flatnonzero(labels == label)]
        centroid = vectors[idx].mean(axis=0)
        centroid /= np.linalg.norm(centroid) or 1.0
        distances = {i: float(1.0 - vectors[i] @ centroid) for i in idx}
        idx.sort(key=lambda i: (distances[i], i))
        clusters.append(Cluster(idx, centroid.astype(np.float32), distances, common_key([keys[i] for i in idx]),
                                keywords.get(label, [])))
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
    return _greedy(pairs, threshold)


def match_members(members: Sequence[set[str]], stored: dict[int, set[str]],
                  threshold: float = OVERLAP_THRESHOLD) -> dict[int, int]:
    """Match new clusters to stored signatures, one to one, greedily by highest Jaccard overlap
    of their member unit ids.

    Returns:
        ``{new cluster index: stored signature id}`` for pairs with overlap >= ``threshold``.
    """
    pairs = sorted(((len(m & s) / len(m | s), i, sid) for i, m in enumerate(members) for sid, s in stored.items()
                    if m & s), key=lambda p: (-p[0], p[1], p[2]))
    return _greedy(pairs, threshold)


def _greedy(pairs: list[tuple[float, int, int]], threshold: float) -> dict[int, int]:
    out: dict[int, int] = {}
    taken: set[int] = set()
    for score, i, sid in pairs:
        if score >= threshold and i not in out and sid not in taken:
            out[i] = sid
            taken.add(sid)
    return out
