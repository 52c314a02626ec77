"""SQL conditions on a unit's environment and release (``units.env``, ``units.release``), for selections
(``env:NAME``, ``release:X``) and for what defaults to production (the worker, signatures, drift, reports).

A unit stored without an environment counts as the ``[environments] default`` one
(:class:`assay.settings.EnvScope`), so the condition for that environment also takes ``env IS NULL``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, func, or_, select, true

from assay._store.tables import UnitRow
from assay.settings import EnvScope

if TYPE_CHECKING:
    from assay._store.store import Store


def env_condition(scope: EnvScope | None) -> ColumnElement[bool]:
    """``units`` rows in ``scope`` (None: every unit), usable in any query joined to ``units``."""
    if scope is None:
        return true()
    if scope.includes_unset:
        return or_(UnitRow.env == scope.name, UnitRow.env.is_(None))
    return UnitRow.env == scope.name


def release_condition(release: str) -> ColumnElement[bool]:
    """``units`` rows produced by ``release`` (exact match)."""
    return UnitRow.release == release


def environments(store: Store) -> dict[str, int]:
    """Units per environment, largest first (units stored without one under ``[environments] default``,
    or ``none`` when that is empty)."""
    default = store.environments.default or "none"
    counts: dict[str, int] = {}
    with store.session() as s:
        for env, n in s.execute(select(UnitRow.env, func.count()).group_by(UnitRow.env)):
            counts[env or default] = counts.get(env or default, 0) + int(n)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
