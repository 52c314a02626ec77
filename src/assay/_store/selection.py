"""Unit selections: which stored units a command works on, parsed once at the edge and compiled to SQL.

The text form (``--candidate``, ``--units``, ``--baseline``, CI variables) is terms separated by
commas, intersected (``failed,source:trial-1.json``):

============== ==================================================================================
``all``        every unit
``failed``     the unit's failure score (noisy-OR of its failure signals) is at least ``[signals] fail_at``;
               a unit never run through the detectors: outcome ``fail``, or no outcome and an error span
``passed``     every unit that is not ``failed``
``labelled``   units with at least one annotation
``prefix:TEXT`` unit id starts with TEXT (case-sensitive)
``source:TEXT`` the unit's source contains TEXT (case-sensitive)
``env:NAME``   the unit ran in environment NAME (no environment stored: ``[environments] default``)
``release:X``  the unit was produced by release X
============== ==================================================================================

:meth:`UnitSelection.parse` turns the text into a :class:`UnitSelection` (a tuple of typed terms)
or raises :class:`~assay.exceptions.UsageError`; :meth:`UnitSelection.query` is one ``SELECT`` of
unit ids with every term in its ``WHERE`` clause, served by the indexes of migration ``0004_select``
(``units (outcome, has_error)``, the unit id's index for ``prefix:``, ``annotations (unit_id)``;
``units.env`` and ``units.release`` (migration ``0010_env``); ``source:`` is a substring test no
B-tree index serves, decided in SQL). ``failed`` and ``passed`` are
the one definition of a failed unit, :func:`assay._store.signal_rows.failed_units_query`, as a
subquery; it depends on the workspace's ``[signals]`` settings, which :meth:`SelectionTerm.where`
receives. No unit row is read into Python to decide a selection.

**Adding a term** is one class and one entry in :data:`Term`: a frozen model with a ``kind``
literal (the word before the colon), a ``value`` field when the term takes one (its type parses
and validates the text after the colon: a ``datetime`` for ``since:``, an ``int`` ...), and
:meth:`SelectionTerm.where`, the SQL condition on :class:`~assay._store.tables.UnitRow` given the
``[signals]`` settings (a subquery for a term about another table, as ``labelled`` does)::

    class EnvTerm(SelectionTerm):
        \"\"\"``env:NAME``: units whose ``env`` attribute is NAME.\"\"\"
        kind: Literal["env"] = "env"
        placeholder = "NAME"
        value: str = Field(min_length=1)

        def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
            return UnitRow.attributes["env"].as_string() == self.value
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import (
    Boolean,
    ColumnElement,
    Select,
    SQLColumnExpression,
    and_,
    func,
    literal,
    select,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import operators
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import Grouping
from sqlalchemy.sql.operators import OperatorType
from sqlalchemy.sql.visitors import InternalTraversal

from assay._store.environments import env_condition, release_condition
from assay._store.signal_rows import failed_units_query
from assay._store.tables import AnnotationRow, UnitRow
from assay.exceptions import UsageError
from assay.settings import EnvironmentSettings
from assay.settings.signals import SignalSettings


# --- dialect-aware string tests -----------------------------------------------------------------
class _StringTest(ColumnElement[bool]):
    """A case-sensitive string test compiled per dialect (``LIKE`` is case-insensitive on SQLite)."""

    inherit_cache = True
    type = Boolean()
    _traverse_internals = [("generic", InternalTraversal.dp_clauseelement),
                           ("sqlite", InternalTraversal.dp_clauseelement)]

    def __init__(self, generic: ColumnElement[bool], sqlite: ColumnElement[bool]) -> None:
        self.generic, self.sqlite = generic, sqlite

    def self_group(self, against: OperatorType | None = None) -> ColumnElement[Any]:
        """Already a predicate: no ``= 1`` when joined with AND / OR (as a Boolean column would get)."""
        return self if against in (None, operators.and_, operators.or_, operators._asbool) else Grouping(self)


@compiles(_StringTest)
def _compile_generic(element: _StringTest, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.generic, **kw)


@compiles(_StringTest, "sqlite")
def _compile_sqlite(element: _StringTest, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.sqlite, **kw)


def _like_escape(text: str) -> str:
    """``text`` as a literal in a LIKE pattern with ``ESCAPE '/'``."""
    return text.replace("/", "//").replace("%", "/%").replace("_", "/_")


def _glob_escape(text: str) -> str:
    """``text`` as a literal in a SQLite GLOB pattern (``*``, ``?`` and ``[`` in brackets)."""
    return "".join(f"[{c}]" if c in "*?[" else c for c in text)


def starts_with(column: SQLColumnExpression[str], prefix: str) -> ColumnElement[bool]:
    """``column`` starts with ``prefix``, case-sensitively: ``GLOB 'prefix*'`` on SQLite, ``LIKE 'prefix%'``
    (escaped) elsewhere; both use an index on ``column`` (PostgreSQL: one with ``text_pattern_ops``)."""
    return _StringTest(column.like(literal(_like_escape(prefix) + "%"), escape="/"),
                       column.op("GLOB", return_type=Boolean)(literal(_glob_escape(prefix) + "*")))


def contains(column: SQLColumnExpression[str], text: str) -> ColumnElement[bool]:
    """``column`` contains ``text``, case-sensitively: ``instr`` on SQLite, ``LIKE '%text%'`` (escaped) elsewhere."""
    return _StringTest(column.like(literal(f"%{_like_escape(text)}%"), escape="/"), func.instr(column, text) > 0)


# --- terms --------------------------------------------------------------------------------------
class SelectionTerm(BaseModel):
    """One term of a unit selection (see the module docstring for adding one)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    placeholder: ClassVar[str] = ""
    """What the value stands for in usage messages (``TEXT`` in ``prefix:TEXT``); empty: no value."""

    kind: str

    @classmethod
    def usage(cls) -> str:
        """How the term is written: ``failed``, ``prefix:TEXT``."""
        word = cls.model_fields["kind"].default
        return f"{word}:{cls.placeholder}" if "value" in cls.model_fields else str(word)

    def text(self) -> str:
        """The term as written: ``kind`` or ``kind:value``."""
        value = getattr(self, "value", None)
        return self.kind if value is None else f"{self.kind}:{value}"

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        """The SQL condition on ``units`` rows this term selects, under the workspace's ``[signals]``
        settings (``fail_at`` decides ``failed``) and ``[environments]`` settings (the environment a unit
        stored without one counts as)."""
        raise NotImplementedError


class AllTerm(SelectionTerm):
    """``all``: every unit."""

    kind: Literal["all"] = "all"

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        return true()


class FailedTerm(SelectionTerm):
    """``failed``: the unit's failure score is at least ``[signals] fail_at`` (for a unit never run through
    the detectors: outcome ``fail``, or no recorded outcome and an error span); see
    :func:`~assay._store.signal_rows.failed_units_query`."""

    kind: Literal["failed"] = "failed"

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        return UnitRow.unit_id.in_(failed_units_query(signals.fail_at))


class PassedTerm(SelectionTerm):
    """``passed``: every unit that is not ``failed``."""

    kind: Literal["passed"] = "passed"

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        return UnitRow.unit_id.not_in(failed_units_query(signals.fail_at))


class LabelledTerm(SelectionTerm):
    """``labelled``: units with at least one annotation."""

    kind: Literal["labelled"] = "labelled"

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        return UnitRow.unit_id.in_(select(AnnotationRow.unit_id))


class PrefixTerm(SelectionTerm):
    """``prefix:TEXT``: the unit id starts with TEXT."""

    kind: Literal["prefix"] = "prefix"
    placeholder = "TEXT"
    value: str = Field(min_length=1)

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        return starts_with(UnitRow.unit_id, self.value)


class SourceTerm(SelectionTerm):
    """``source:TEXT``: the unit's source contains TEXT."""

    kind: Literal["source"] = "source"
    placeholder = "TEXT"
    value: str = Field(min_length=1)

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        return contains(UnitRow.source, self.value)


class EnvTerm(SelectionTerm):
    """``env:NAME``: the unit ran in environment NAME (a unit stored without one counts as ``[environments]
    default``; ``env:all`` is every unit); see :mod:`assay._store.environments`."""

    kind: Literal["env"] = "env"
    placeholder = "NAME"
    value: str = Field(min_length=1)

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        return env_condition(environments.scope(self.value))


class ReleaseTerm(SelectionTerm):
    """``release:X``: the unit was produced by release X (exact match)."""

    kind: Literal["release"] = "release"
    placeholder = "X"
    value: str = Field(min_length=1)

    def where(self, signals: SignalSettings, environments: EnvironmentSettings) -> ColumnElement[bool]:
        return release_condition(self.value)


Term = Annotated[AllTerm | FailedTerm | PassedTerm | LabelledTerm | PrefixTerm | SourceTerm | EnvTerm | ReleaseTerm,
                 Field(discriminator="kind")]
"""Every selection term, told apart by ``kind``."""

TERMS: dict[str, type[SelectionTerm]] = {cls.model_fields["kind"].default: cls for cls in get_args(get_args(Term)[0])}
"""Term word -> term class, read from :data:`Term`."""


def _usage() -> str:
    *rest, last = [cls.usage() for cls in TERMS.values()]
    return f"{', '.join(rest)} or {last}"


def _term(raw: str, selection: str) -> SelectionTerm:
    word, colon, value = raw.partition(":")
    cls = TERMS.get(word)
    if cls is None or bool(colon) != ("value" in cls.model_fields):
        raise UsageError(f"unknown unit selection {raw!r}: use {_usage()}")
    if colon and not value:
        raise UsageError(f"empty selection {selection!r}: give {_usage()} (omit the option for all units)")
    try:
        return cls.model_validate({"kind": word, **({"value": value} if colon else {})})
    except ValidationError as exc:
        problem = "; ".join(e["msg"] for e in exc.errors())
        raise UsageError(f"bad unit selection {raw!r}: {problem}") from exc


class UnitSelection(BaseModel):
    """Which stored units to work on: terms intersected; no terms (or ``all``) is every unit.

    Build one with :meth:`parse` from the text form (module docstring); ``str()`` gives the text back.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    terms: tuple[Term, ...] = ()

    @classmethod
    def parse(cls, selection: str | UnitSelection | None) -> UnitSelection:
        """Read the text form. ``None`` is every unit; an explicitly empty selection (``""``, ``"prefix:"``,
        ``"source:"``, an empty comma term) is refused, so an unset CI variable never selects everything.

        Raises:
            UsageError: an empty, unknown or invalid term (the message lists the terms there are).
        """
        if selection is None or isinstance(selection, UnitSelection):
            return selection or cls()
        raw = [t.strip() for t in selection.split(",")]
        if any(not t for t in raw):
            raise UsageError(f"empty selection {selection!r}: give {_usage()} (omit the option for all units)")
        return cls(terms=tuple(_term(t, selection) for t in raw))

    @staticmethod
    def usage() -> str:
        """The terms there are, for help and error messages: ``"all, failed, ... or source:TEXT"``."""
        return _usage()

    def __str__(self) -> str:
        return ",".join(t.text() for t in self.terms) or "all"

    def where(self, signals: SignalSettings | None = None,
              environments: EnvironmentSettings | None = None) -> ColumnElement[bool]:
        """The SQL condition on ``units`` rows: every term's, joined with AND.

        Args:
            signals: the workspace's ``[signals]`` settings (the store's ``Store.signals``); default:
                the defaults. ``fail_at`` decides ``failed`` and ``passed``.
            environments: the ``[environments]`` settings (``Store.environments``); default: the defaults.
                ``default`` is the environment of a unit stored without one, for ``env:NAME``.
        """
        cfg, envs = signals or SignalSettings(), environments or EnvironmentSettings()
        return and_(true(), *(t.where(cfg, envs) for t in self.terms))

    def query(self, signals: SignalSettings | None = None,
              environments: EnvironmentSettings | None = None) -> Select[str]:
        """``SELECT unit_id FROM units WHERE ... ORDER BY unit_id`` (settings as in :meth:`where`)."""
        return select(UnitRow.unit_id).where(self.where(signals, environments)).order_by(UnitRow.unit_id)
