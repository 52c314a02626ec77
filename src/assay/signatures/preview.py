"""Failure signatures of an environment other than production, clustered for one view and never stored.

The stored signatures are production's (``[environments] production``): their ids, members, lifecycle,
criteria and review queues. ``assay signatures --env NAME`` (or ``--env all``) clusters that environment's
failed units the way a build does (:func:`assay.signatures.build.build_signatures`) but keeps the result in
memory, so looking at an evaluation run never moves a production signature. A preview cluster that matches
a stored signature (members first, then centroid, as a build matches) shows its id with status
``existing``; the others get ids past the stored ones, status ``new``, and exist in this view only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select

from assay._store import Store
from assay._store.store import IN_CHUNK
from assay._store.tables import SignatureRow, UnitRow
from assay._store.usage import unit_usages
from assay.settings import Settings
from assay.signatures.build import Prepared, _cluster, _stored_members, failed_unit_ids, prepare
from assay.signatures.cluster import Cluster, match_clusters, match_members
from assay.signatures.embeddings import Progress, vector_from_bytes
from assay.signatures.impact import RECENCY_HALF_LIFE_DAYS, SEVERITY_WEIGHT, annotated_severity, aware, unit_weight
from assay.signatures.listing import signature_usage
from assay.signatures.mix import ordered, unit_kinds
from assay.signatures.model import EmbeddingStats, Signature
from assay.traces.usage import UnitUsage


def is_stored_scope(store: Store, env: str | None) -> bool:
    """Whether ``--env`` names the environment whose signatures are stored (``[environments] production``)."""
    scope = store.env_scope(env)
    return scope is not None and scope.name == store.environments.production


def preview_signatures(store: Store, settings: Settings, env: str | None, progress: Progress | None = None,
                       stats: EmbeddingStats | None = None,
                       half_life_days: float = RECENCY_HALF_LIFE_DAYS) -> list[Signature]:
    """Cluster the failed units of ``env`` (a name, or ``all``) without storing signatures or members.

    Writes only what is a fact of a unit (the embedding cache, severe flags), as a build does.

    Returns:
        the clusters as signatures ranked by impact (as :func:`~assay.signatures.list_signatures` ranks),
        ``share`` over the environment's failed units, lifecycle ``new``.

    Raises:
        MissingDependency, ConfigError: the embedding model cannot be loaded.
    """
    prepared = prepare(store, settings, failed_unit_ids(store, env), progress, stats)
    if not prepared.unit_ids:
        return []
    clusters, _ = _cluster(prepared, settings)
    ids = _preview_ids(store, clusters, prepared.unit_ids)
    facts = _Facts(annotated_severity(store, set(prepared.unit_ids)), unit_usages(store, prepared.unit_ids,
                   settings.prices), unit_kinds(store), _environments(store, prepared.unit_ids),
                   max((aware(t) for t in prepared.seen if t is not None), default=None))  # type: ignore[type-var]
    out = [_signature(prepared, c, ids[n], facts, half_life_days) for n, c in enumerate(clusters)]
    return sorted(out, key=lambda sig: (-sig.impact, -sig.size, sig.id))


def _preview_ids(store: Store, clusters: Sequence[Cluster], unit_ids: Sequence[str]) -> dict[int, tuple[int, bool]]:
    """``{cluster index: (id, matches a stored live signature)}``; unmatched clusters numbered past the stored."""
    with store.session() as s:
        rows = {r.id: r for r in s.scalars(select(SignatureRow).where(SignatureRow.status != "retired"))}
        members = {sid: m for sid, m in _stored_members(s).items() if sid in rows}
        top = max([0, *s.scalars(select(SignatureRow.id))])
    matches = match_members([{unit_ids[i] for i in c.members} for c in clusters], members)
    rest = [n for n in range(len(clusters)) if n not in matches]
    stored = {sid: vector_from_bytes(r.centroid) for sid, r in rows.items()
              if r.centroid and sid not in matches.values()}
    matches.update({rest[j]: sid for j, sid in match_clusters([clusters[n].centroid for n in rest], stored).items()})
    fresh = iter(range(top + 1, top + 1 + len(clusters)))
    return {n: (matches[n], True) if n in matches else (next(fresh), False) for n in range(len(clusters))}


@dataclass
class _Facts:
    """What ranks and describes the preview clusters, read once: severities from annotations, usage,
    signal kinds and environment per unit, and the newest failed unit's time (recency)."""

    annotated: dict[str, int]
    usages: Mapping[str, UnitUsage]
    kinds: dict[str, set[str]]
    envs: dict[str, str]
    newest: datetime | None


def _signature(prepared: Prepared, cluster: Cluster, sid: tuple[int, bool], facts: _Facts,
               half_life_days: float) -> Signature:
    ids = [prepared.unit_ids[i] for i in cluster.members]
    levels = [facts.annotated.get(prepared.unit_ids[i], prepared.severity[i]) for i in cluster.members]
    seen = [aware(prepared.seen[i]) for i in cluster.members if prepared.seen[i] is not None]
    impact = sum(unit_weight(level, prepared.seen[i], facts.newest, half_life_days)
                 for level, i in zip(levels, cluster.members, strict=True))
    weight = sum(SEVERITY_WEIGHT[min(4, max(1, level if level is not None else 2))] for level in levels)
    usages, kinds = facts.usages, facts.kinds
    return Signature(
        id=sid[0], structural_key=cluster.key.text, label=cluster.label, keywords=cluster.keywords, size=len(ids),
        share=len(ids) / len(prepared.unit_ids), impact=round(impact, 4), severity=weight / len(ids),
        first_seen=min(seen, default=None), last_seen=max(seen, default=None),  # type: ignore[type-var]
        representative_unit=ids[0], status="existing" if sid[1] else "new", unit_ids=ids,
        usage=signature_usage([usages[u] for u in ids if u in usages]),
        signal_mix=ordered(Counter(k for u in ids for k in kinds.get(u, ()))),
        environments=dict(Counter(facts.envs.get(u, '') for u in ids).most_common()))


def _environments(store: Store, unit_ids: Sequence[str]) -> dict[str, str]:
    default = store.environments.default or "none"
    out: dict[str, str] = {}
    with store.session() as s:
        for start in range(0, len(unit_ids), IN_CHUNK):
            chunk = list(unit_ids[start:start + IN_CHUNK])
            out.update({u: env or default for u, env in s.execute(
                select(UnitRow.unit_id, UnitRow.env).where(UnitRow.unit_id.in_(chunk)))})
    return out
