"""SQL conditions on a unit's environment and release (``units.env``, ``units.release``), for selections
(``env:NAME``, ``release:X``) and for what defaults to production (the worker, signatures, drift, reports).

A unit stored without an environment counts as the ``[environments] default`` one
(:class:`assay.settings.EnvScope`), so the condition for that environment also takes ``env IS NULL``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import ColumnElement, func, or_, select, true

from assay._store.tables import ApiKeyRow, UnitRow
from assay.exceptions import UsageError
from assay.settings import ALL_ENVIRONMENTS, EnvironmentSettings, EnvScope

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


def known_environments(store: Store) -> list[str]:
    """The environment names ``--env`` and ``env:NAME`` take, sorted: those of stored units and API keys,
    and ``[environments] production`` and ``default`` (when set) even before any unit has them."""
    settings: EnvironmentSettings = store.environments
    with store.session() as s:
        stored = {e for e in s.scalars(select(UnitRow.env).distinct()) if e}
        stored |= {e for e in s.scalars(select(ApiKeyRow.env).distinct()) if e}
    return sorted(stored | {settings.production} | ({settings.default} if settings.default else set()))


def check_environment(store: Store, scope: EnvScope | None) -> EnvScope | None:
    """``scope`` when the store knows its environment (see :func:`known_environments`; None, every unit, always).

    Raises:
        UsageError: an environment no unit, API key or setting names (a typo would select nothing).
    """
    if scope is None or scope.name in (store.environments.production, store.environments.default):
        return scope
    known = known_environments(store)
    if scope.name not in known:
        raise UsageError(f"unknown environment {scope.name!r}: this store knows {', '.join(known)} "
                         f"(or {ALL_ENVIRONMENTS!r}, every environment)")
    return scope
