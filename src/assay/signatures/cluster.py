"""The clustering math of failure signatures: pure functions on arrays, no store.

Units are compared in the **clustering space**: the text embedding joined with one-hot codes
of the structural key's tool and error type, each scaled by :data:`KEY_WEIGHT`. Text vectors
are unit-norm, so half the squared Euclidean distance there is the **joint distance**
(:func:`joint_distance`): the text's cosine distance plus ``KEY_WEIGHT ** 2`` (0.25) for each
of tool and error type that differs.

A build (:func:`cover_labels`) groups the failed units in three passes, so that a signature
covers what fails the same way even where the units are too few for density estimates:

1. **dense clusters**: HDBSCAN (Campello, Moulavi and Sander 2013, "Density-Based Clustering
   Based on Hierarchical Density Estimates", PAKDD; ``sklearn.cluster.HDBSCAN``) with
   ``min_cluster_size``, leaf clusters (:func:`cluster_labels`); the rest is noise;
2. **close noise joins**: a noise unit joins the nearest cluster when its joint distance to the
   cluster (text centroid and common key) is within the cluster's radius, the largest joint
   distance of a member: the rule incremental updates assign new units by
   (:func:`nearest_cluster`);
3. **leftover groups**: the units still noise are grouped by average linkage (UPGMA, Sokal and
   Michener 1958; ``scipy.cluster.hierarchy``) on their joint distances, cut at
   :data:`GROUP_DISTANCE`: a group of at least two units whose members are, on average, within
   that distance of each other becomes a cluster; then pass 2 runs once more.

Units left alone after that stay noise. On 29 failed tau-bench retail runs HDBSCAN alone
finds no cluster at all (every unit noise); pass 3 is what groups them.

That is the ``density`` clustering. The default, ``silhouette`` (:func:`silhouette_labels`), groups
every failed unit at once by average linkage on the same joint distances and cuts the tree into the
number of groups with the highest mean silhouette (Rousseeuw 1987, "Silhouettes: a graphical aid to
the interpretation and validation of cluster analysis", J. Comput. Appl. Math. 20); a unit alone in
its group joins the nearest cluster when within its radius (pass 2, the rule of incremental updates),
else stays noise. It has no distance threshold, so it adapts to how spread a store's failures
are. :func:`signature_labels` picks between them: the density passes run when there are fewer than
3 or more than :data:`MAX_GROUPED` units, or when no cut has a positive silhouette (no structure).
Measured against human failure categories in ``benchmarks/bench_discovery.py --part clusters``.

Centroids, stored distances and review queues use the text embedding alone.
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

GROUP_DISTANCE = 0.5
"""Average joint distance at which leftover noise is cut into groups (pass 3). Chosen by reasoning,
not fitted: two failure texts with the same key whose cosine similarity is 0.5 are halfway between
unrelated and identical; with one key field differing, the texts must be 0.75 similar."""

MAX_GROUPED = 5000
"""Most leftover noise units grouped by average linkage (its distance matrix is quadratic:
5,000 units take 100 MB); above it, pass 3 is skipped and the noise stays noise."""

MAX_SIGNATURES = 50
"""Most groups the silhouette cut considers: k runs from 2 to ``min(n // 2 - 1, 50)`` for n units."""

MIXED = "*"
"""A signature key field whose value no majority of members shares."""

NOISE = -1


@dataclass
class Cluster:
    """One cluster of a build: indices into the build's unit list, nearest the centroid first.

    ``centroid`` is the L2-normalized mean text embedding, shape ``(d,)``; ``distances`` maps
    member index to cosine distance from it (0..2); ``key`` is the members' common key
    (:func:`common_key`); ``lead`` the signal kind at least half the members' failure texts
    start with (None: no such majority); ``label`` is set when the cluster is named.
    """

    members: list[int]
    centroid: np.ndarray
    distances: dict[int, float]
    key: StructuralKey
    keywords: list[str]
    lead: str | None = None
    label: str = ""
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

    Clusters are the *leaves* of HDBSCAN's condensed tree (``cluster_selection_method="leaf"``),
    the most homogeneous dense groups, not the most persistent ones (``"eom"``): with eom, the 27
    failed retail runs of a store that also holds a dense group of other runs came out as one
    cluster of everything retail; a signature should hold units that fail the same way, and
    the passes after HDBSCAN cover what leaves leave out.

    Returns:
        int array of shape ``(n,)``: cluster index >= 0, or -1 for noise. All noise when
        there are fewer units than ``min_cluster_size``.
    """
    size = max(2, min_cluster_size)
    if len(vectors) < size:
        return np.full(len(vectors), NOISE, dtype=int)
    from sklearn.cluster import HDBSCAN

    return np.asarray(HDBSCAN(min_cluster_size=size, metric="euclidean", cluster_selection_method="leaf",
                                  copy=True).fit_predict(vectors))


@dataclass
class Shape:
    """Where a cluster sits for assignment: text centroid (unit-norm), common key, radius."""

    centroid: np.ndarray
    key: StructuralKey
    radius: float


def cluster_shape(vectors: np.ndarray, keys: Sequence[StructuralKey], idx: np.ndarray,
                  weight: float = KEY_WEIGHT) -> Shape:
    """The shape of the cluster of rows ``idx``: normalized mean text vector, common key, and
    radius, the largest joint distance of a member to both."""
    centroid = vectors[idx].mean(axis=0)
    centroid /= np.linalg.norm(centroid) or 1.0
    key = common_key([keys[i] for i in idx])
    radius = max(joint_distance(float(1.0 - vectors[i] @ centroid), keys[i], key, weight) for i in idx)
    return Shape(centroid, key, radius)


def join_noise(vectors: np.ndarray, labels: np.ndarray, keys: Sequence[StructuralKey],
               weight: float = KEY_WEIGHT) -> np.ndarray:
    """Pass 2: each noise unit joins the nearest cluster when within its radius.

    Args:
        vectors: text embeddings ``(n, d)``, rows L2-normalized.
        labels: cluster per row, ``(n,)``, -1 for noise (not changed).
        keys: structural key per row.

    Returns:
        new labels: a noise row takes the label of the cluster nearest by joint distance (to the
        cluster's normalized mean text vector and its :func:`common_key`) when that distance is
        at most the cluster's radius, the largest joint distance of one of its members.
    """
    out = labels.copy()
    found = [int(x) for x in sorted(set(labels.tolist()) - {NOISE})]
    noise = np.flatnonzero(labels == NOISE)
    if not found or not len(noise):
        return out
    shapes = [cluster_shape(vectors, keys, np.flatnonzero(labels == c), weight) for c in found]
    for i in noise.tolist():
        hit = nearest_cluster(vectors[i], keys[i], shapes, weight)
        if hit is not None:
            out[i] = found[hit]
    return out


def nearest_cluster(vector: np.ndarray, key: StructuralKey, shapes: Sequence[Shape],
                    weight: float = KEY_WEIGHT) -> int | None:
    """Index of the shape nearest ``vector`` by joint distance when within its radius (1e-6
    tolerance), else None."""
    if not shapes:
        return None
    joint = [joint_distance(float(1.0 - sh.centroid @ vector), key, sh.key, weight) for sh in shapes]
    best = int(np.argmin(joint))
    return best if joint[best] <= shapes[best].radius + 1e-6 else None


def group_noise(space: np.ndarray, labels: np.ndarray, threshold: float = GROUP_DISTANCE,
                max_units: int = MAX_GROUPED) -> np.ndarray:
    """Pass 3: group the noise rows by average linkage on their joint distances.

    Args:
        space: the clustering space (:func:`clustering_space`), ``(n, d + k)``.
        labels: cluster per row, -1 for noise (not changed).
        threshold: the dendrogram is cut where the average joint distance between two groups
            exceeds it (scipy ``fcluster``, criterion ``distance``).
        max_units: with more noise rows than this, nothing is grouped.

    Returns:
        new labels: each group of two or more noise rows gets a fresh label (after the largest
        existing one, largest group first); single rows stay -1.
    """
    out = labels.copy()
    noise = np.flatnonzero(labels == NOISE)
    if len(noise) < 2 or len(noise) > max_units:
        return out
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist

    joint = np.maximum(pdist(space[noise].astype(np.float64), "sqeuclidean") / 2.0, 0.0)
    groups = fcluster(linkage(joint, method="average"), t=threshold, criterion="distance")
    ranked = _ranked(groups)
    start = int(labels.max()) + 1 if len(labels) else 0
    out[noise[ranked != NOISE]] = start + ranked[ranked != NOISE]
    return out


def cover_labels(vectors: np.ndarray, keys: Sequence[StructuralKey], min_cluster_size: int,
                 threshold: float = GROUP_DISTANCE, weight: float = KEY_WEIGHT) -> np.ndarray:
    """The three passes of a build (see module docstring): HDBSCAN, close noise joins, leftover
    groups by average linkage, close noise joins again.

    Args:
        vectors: text embeddings ``(n, d)``, rows L2-normalized.
        keys: structural key per row.
        min_cluster_size: HDBSCAN's smallest dense cluster (groups of pass 3 need two units).
        threshold: :data:`GROUP_DISTANCE` of pass 3.

    Returns:
        int array ``(n,)``: cluster index >= 0, or -1 for a unit like no other.
    """
    if not len(keys):
        return np.zeros(0, dtype=int)
    space = clustering_space(vectors, keys, weight)
    labels = join_noise(vectors, cluster_labels(space, min_cluster_size), keys, weight)
    return join_noise(vectors, group_noise(space, labels, threshold), keys, weight)


def _ranked(groups: np.ndarray) -> np.ndarray:
    """Groups of two or more rows numbered 0.. (largest first, then lowest group id); single rows -1."""
    sizes = Counter(groups.tolist())
    out = np.full(len(groups), NOISE, dtype=int)
    for n, g in enumerate(sorted((g for g, size in sizes.items() if size >= 2), key=lambda g: (-sizes[g], g))):
        out[groups == g] = n
    return out


def silhouette_labels(vectors: np.ndarray, keys: Sequence[StructuralKey], weight: float = KEY_WEIGHT,
                      max_k: int = MAX_SIGNATURES) -> np.ndarray | None:
    """Every unit grouped by average linkage (UPGMA; ``scipy.cluster.hierarchy``) on joint distances,
    the tree cut into the k groups (2 <= k <= ``min(n // 2 - 1, max_k)``) with the highest mean
    silhouette (``sklearn.metrics.silhouette_score`` on the joint distances; ties: fewer groups).

    Args:
        vectors: text embeddings ``(n, d)``, rows L2-normalized, n >= 3.
        keys: structural key per row.

    Returns:
        int array ``(n,)``: group index >= 0 (largest group first), -1 for a unit alone in its group;
        None when no cut has a positive silhouette (the units show no group structure).
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from scipy.spatial.distance import pdist, squareform
    from sklearn.metrics import silhouette_score

    joint = np.maximum(pdist(clustering_space(vectors, keys, weight).astype(np.float64), "sqeuclidean") / 2.0, 0.0)
    tree, square = linkage(joint, method="average"), squareform(joint)
    best: tuple[float, np.ndarray] | None = None
    for k in range(2, min(max(3, len(keys) // 2), max_k + 1)):
        groups = fcluster(tree, t=k, criterion="maxclust")
        if 2 <= len(set(groups.tolist())) < len(keys):
            score = float(silhouette_score(square, groups, metric="precomputed"))
            if score > 0 and (best is None or score > best[0]):
                best = (score, groups)
    return None if best is None else _ranked(best[1])


def signature_labels(vectors: np.ndarray, keys: Sequence[StructuralKey], min_cluster_size: int,
                     method: str = "silhouette", weight: float = KEY_WEIGHT) -> np.ndarray:
    """The clustering of a build: :func:`silhouette_labels` then close noise joins (:func:`join_noise`;
    ``method="silhouette"``, the default) or
    the density passes of :func:`cover_labels` (``"density"``; also when silhouette does not apply:
    fewer than 3 or more than :data:`MAX_GROUPED` units, or no structure).

    Returns:
        int array ``(n,)``: cluster index >= 0, or -1 for a unit like no other.

    Raises:
        ValueError: an unknown ``method``.
    """
    if method not in ("silhouette", "density"):
        raise ValueError(f"unknown signature clustering {method!r}: use 'silhouette' or 'density'")
    if method == "silhouette" and 3 <= len(keys) <= MAX_GROUPED:
        labels = silhouette_labels(vectors, keys, weight)
        if labels is not None:
            return join_noise(vectors, labels, keys, weight)
    return cover_labels(vectors, keys, min_cluster_size, weight=weight)


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


def majority(values: Sequence[str | None], share: float = 0.5) -> str | None:
    """The most common value when at least ``share`` of ``values`` have it (ties: first seen), else None."""
    if not values:
        return None
    value, count = Counter(values).most_common(1)[0]
    return value if count >= share * len(values) else None


def make_clusters(vectors: np.ndarray, labels: np.ndarray, keys: Sequence[StructuralKey],
                  keywords: dict[int, list[str]], leads: Sequence[str | None] | None = None) -> list[Cluster]:
    """Clusters of one labelling with centroid, member distances, common key, keywords and
    leading signal; largest first (ties: lowest first member index).

    Args:
        vectors: text embeddings ``(n, d)``, rows L2-normalized.
        labels: cluster per row, ``(n,)``, -1 for noise.
        keys: structural key per row.
        keywords: ``{label: keywords}`` (:func:`~assay.signatures.labels.class_tfidf`).
        leads: the signal kind each row's failure text starts with
            (:func:`~assay.signatures.evidence.lead_kind`); None: unknown.
    """
    clusters = []
    for label in sorted(set(labels.tolist()) - {NOISE}):
        idx = [int(i) for i in np.flatnonzero(labels == label)]
        centroid = vectors[idx].mean(axis=0)
        centroid /= np.linalg.norm(centroid) or 1.0
        distances = {i: float(1.0 - vectors[i] @ centroid) for i in idx}
        idx.sort(key=lambda i: (distances[i], i))
        lead = majority([leads[i] for i in idx]) if leads is not None else None
        clusters.append(Cluster(idx, centroid.astype(np.float32), distances, common_key([keys[i] for i in idx]),
                                keywords.get(label, []), lead))
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
