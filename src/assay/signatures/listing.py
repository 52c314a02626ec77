"""Read the stored signatures: ranked by impact, members, 2-D map points."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select

from assay._store import Store
from assay._store.tables import MemberRow, SignatureRow, UnitRow
from assay._store.usage import unit_usages
from assay.exceptions import NotFoundError
from assay.signatures.impact import RECENCY_HALF_LIFE_DAYS, SEVERITY_WEIGHT, annotated_severity, aware, unit_weight
from assay.signatures.mix import signal_mixes
from assay.signatures.model import Signature, SignatureUsage
from assay.traces.usage import Price, UnitUsage


@dataclass
class _Tally:
    """Members of one signature and their impact terms, nearest the centroid first."""

    unit_ids: list[str] = field(default_factory=list)
    impact: float = 0.0
    weight: float = 0.0
    assigned: int = 0
    seen: list[datetime] = field(default_factory=list)


def _tallies(store: Store, half_life_days: float) -> tuple[dict[int, _Tally], int]:
    """``({signature id: tally}, number of member rows)`` with annotation severities applied."""
    with store.session() as s:
        rows = list(s.execute(select(MemberRow.signature_id, MemberRow.unit_id, MemberRow.seen_at,
                                     MemberRow.severity, MemberRow.assignment)
                              .order_by(MemberRow.distance, MemberRow.unit_id)))
    annotated = annotated_severity(store, {r[1] for r in rows if r[0] is not None})
    newest = max((aware(r[2]) for r in rows if r[2] is not None), default=None)  # type: ignore[type-var]
    out: dict[int, _Tally] = defaultdict(_Tally)
    for sid, unit_id, seen, severity, assignment in rows:
        if sid is None:
            continue
        level = annotated.get(unit_id, severity)
        tally = out[int(sid)]
        tally.unit_ids.append(unit_id)
        tally.impact += unit_weight(level, seen, newest, half_life_days)
        tally.weight += SEVERITY_WEIGHT[min(4, max(1, level if level is not None else 2))]
        tally.assigned += assignment == "assigned"
        if seen is not None:
            tally.seen.append(aware(seen))  # type: ignore[arg-type]
    return out, len(rows)


def signature_usage(usages: Sequence[UnitUsage]) -> SignatureUsage:
    """Sums and means of the members' usage, each over the members that know it."""
    costs = [u.cost_usd for u in usages if u.cost_usd is not None]
    tokens = [(u.input_tokens or 0) + (u.output_tokens or 0) for u in usages
              if u.input_tokens is not None or u.output_tokens is not None]
    latencies = [u.latency_s for u in usages if u.latency_s is not None]
    return SignatureUsage(units_with_cost=len(costs), cost_usd_sum=sum(costs) if costs else None,
                          cost_usd_mean=sum(costs) / len(costs) if costs else None,
                          units_with_tokens=len(tokens), tokens_sum=sum(tokens) if tokens else None,
                          tokens_mean=sum(tokens) / len(tokens) if tokens else None,
                          units_with_latency=len(latencies),
                          latency_s_mean=sum(latencies) / len(latencies) if latencies else None)


def list_signatures(store: Store, include_retired: bool = False,
                    half_life_days: float = RECENCY_HALF_LIFE_DAYS,
                    prices: Mapping[str, Price] | None = None) -> list[Signature]:
    """Stored signatures ranked by impact (units x severity weight x recency, see
    :mod:`assay.signatures.impact`), highest first, then size, then id.

    Args:
        store: the store.
        include_retired: also list signatures the latest build no longer found (size 0).
        half_life_days: recency half-life, in days before the newest failed unit.
        prices: model -> price for tokens whose source gave no cost (``Settings.prices``); the
            members' usage is summed per signature (:class:`~assay.signatures.model.SignatureUsage`).

    Returns:
        signatures with their members (nearest the centroid first, incrementally assigned
        units among them) and signal mix (:mod:`assay.signatures.mix`); empty before the first
        :func:`~assay.signatures.build_signatures`.
    """
    tallies, total = _tallies(store, half_life_days)
    with store.session() as s:
        query = select(SignatureRow).order_by(SignatureRow.id)
        if not include_retired:
            query = query.where(SignatureRow.status != "retired")
        rows = list(s.scalars(query))
    usages = unit_usages(store, [u for t in tallies.values() for u in t.unit_ids], prices)
    envs = member_environments(store)
    mixes = signal_mixes(store)
    out = []
    for r in rows:
        t = tallies.get(r.id, _Tally())
        size = len(t.unit_ids)
        out.append(Signature(
            id=r.id, structural_key=r.structural_key, label=r.label, keywords=list(r.keywords or []), size=size,
            share=size / total if total else 0.0, impact=round(t.impact, 4), severity=t.weight / size if size else 0.0,
            assigned=t.assigned, first_seen=min(t.seen, default=None), last_seen=max(t.seen, default=None),
            representative_unit=r.representative_unit, status=r.status, lifecycle=r.lifecycle or "new",
            unit_ids=t.unit_ids, usage=signature_usage([usages[u] for u in t.unit_ids if u in usages]),
            signal_mix=mixes.get(r.id, {}),
            environments=dict(Counter(envs.get(u, "") for u in t.unit_ids).most_common())))
    return sorted(out, key=lambda sig: (-sig.impact, -sig.size, sig.id))


def member_environments(store: Store) -> dict[str, str]:
    """Unit id -> environment of every signature member (one stored without one: ``[environments] default``,
    "none" when that is empty)."""
    default = store.environments.default or "none"
    with store.session() as s:
        rows = s.execute(select(MemberRow.unit_id, UnitRow.env).join(UnitRow, UnitRow.unit_id == MemberRow.unit_id))
        return {unit_id: env or default for unit_id, env in rows}


def signature_members(store: Store, signature_id: int) -> list[str]:
    """Unit ids of a signature, nearest the centroid first.

    Raises:
        NotFoundError: no signature with this id.
    """
    with store.session() as s:
        if s.get(SignatureRow, signature_id) is None:
            raise NotFoundError("signature", str(signature_id))
        rows = s.scalars(select(MemberRow.unit_id).where(MemberRow.signature_id == signature_id)
                         .order_by(MemberRow.distance, MemberRow.unit_id))
        return list(rows)


def new_units(store: Store) -> list[str]:
    """Failed units marked *new* by :func:`~assay.signatures.update_signatures`: near no
    signature and not yet part of a new one. Sorted."""
    with store.session() as s:
        return list(s.scalars(select(MemberRow.unit_id).where(MemberRow.assignment == "new")
                              .order_by(MemberRow.unit_id)))


def map_points(store: Store) -> list[tuple[str, float, float, int | None]]:
    """Points of the 2-D signature map: ``(unit_id, x, y, signature_id or None for noise)``.

    ``x, y`` are the first two principal components of the clustering space (unitless),
    one point per failed unit the signatures know, sorted by unit id.
    """
    with store.session() as s:
        rows = s.execute(select(MemberRow.unit_id, MemberRow.x, MemberRow.y, MemberRow.signature_id)
                         .order_by(MemberRow.unit_id))
        return [(uid, float(x or 0.0), float(y or 0.0), sid) for uid, x, y, sid in rows]
