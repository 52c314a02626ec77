"""Where failures concentrate: every unit, failed or not, grouped by workflow, with its failure rate
and the rate of each failure-signal kind against the overall rate.

**Workflow** (DESIGN.md: what the user asked for and the tool path taken). Units are grouped by
:func:`assay.signals.population.workflow_key`: their source and the first tool they call that
changes something (a tool whose name does not start with a read-only verb such as ``get`` or
``search``; ``(no action)`` when none does), the key the ``long_session`` detector compares
lengths within. The detectors keep it per scanned unit (``signal_scans.workflow``); a unit never
scanned is loaded to compute it (each time). Each group gets a short **label**: the action in words, then
what the users asked for, the two or three words of their first turns (variables masked) that set
the group apart from the others by class-based TF-IDF (:func:`~assay.signatures.labels.class_tfidf`,
over at most :data:`LABEL_SAMPLE` units per group), e.g. ``return delivered order items, asked about
refund, broken``; with more than one source, the source's name in brackets.

**Rates.** A unit is failed as everywhere in assay (failure score >= ``[signals] fail_at``,
:meth:`assay._store.Store.failed_unit_ids`). Per group: units, failed units, the failure rate and its
95% Wilson interval (Wilson 1927, :func:`assay.stats.wilson_interval`), and the same for every
signal kind its units carry (the share of its units with at least one signal of that kind). A group
is **flagged** when the interval of its failure rate excludes the overall rate (all units of the
environment: ``[environments] production`` unless asked otherwise); a kind
is flagged likewise against its overall share. Each interval is at 95% on its own, not corrected for
the number of groups and kinds compared: on a store where nothing concentrates, about one comparison
in twenty would still be flagged, so read the counts beside the flags. A unit never run through the
detectors counts the signals stored for it and what its source recorded (an outcome ``fail``, an
error span), as it does for *failed*, until ``assay signals update`` scans it.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field
from sqlalchemy import select

from assay._store import Store
from assay._store.environments import env_condition
from assay._store.tables import SignalScanRow, UnitRow
from assay.settings import EnvScope
from assay.settings.signals import SignalSettings
from assay.signals import unit_view, workflow_key
from assay.signatures.keys import mask_variables
from assay.signatures.labels import class_tfidf
from assay.signatures.mix import MIX_NOUNS, unit_kinds
from assay.stats import wilson_interval
from assay.traces.model import Step
from assay.traces.timeline import step_timeline

LABEL_SAMPLE = 30
"""Units per workflow whose first user turn is read for its label (the same ones every time)."""
LABEL_WORDS = 3
FILLER = frozenset({"hi", "hello", "hey", "okay", "ok", "yes", "sure", "thanks", "thank", "want", "need", "like",
                    "just", "really", "help", "make", "tell", "know", "going", "got", "get", "wanted", "trying",
                    "able", "good", "morning", "day", "wondering", "hoping", "sorry", "hmm", "um", "oh", "yeah"})
"""Words of greeting and asking, never a label's request words (English stop words are left out too)."""
_CHUNK = 250
NO_ACTION = "(no action)"

Direction = Literal["higher", "lower", "same"]


class Rate(BaseModel):
    """A share of a group's units with a 95% Wilson interval, against the share over all units."""

    model_config = ConfigDict(frozen=True)

    units: int = Field(ge=0, description="units of the group counted (failed, or carrying the kind)")
    rate: float = Field(ge=0, le=1, description="units / the group's units")
    low: float = Field(ge=0, le=1, description="95% Wilson interval, lower end")
    high: float = Field(ge=0, le=1, description="95% Wilson interval, upper end")
    overall: float = Field(ge=0, le=1, description="the same share over all units")
    direction: Direction = Field(description="'higher' or 'lower' when the interval excludes the overall share")

    @computed_field  # type: ignore[prop-decorator]
    @property
    def flagged(self) -> bool:
        """The interval excludes the overall share."""
        return self.direction != "same"


class KindRate(Rate):
    """The share of a group's units with a signal of one kind."""

    kind: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def text(self) -> str:
        """E.g. ``escalation in 38% vs 9% overall``."""
        noun = MIX_NOUNS.get(self.kind, (self.kind.replace("_", " "),))[0]
        return f"{noun} in {self.rate:.0%} vs {self.overall:.0%} overall"


class Workflow(BaseModel):
    """One workflow: its units, failure rate and signal kinds against the overall rates."""

    model_config = ConfigDict(frozen=True)

    key: str = Field(description="'SOURCE | ACTION' (assay.signals.workflow_key)")
    label: str = Field(description="the action in words and what the users asked for")
    source: str
    action: str | None = Field(description="the first tool called that changes something; None: no action")
    units: int = Field(ge=1)
    failed: Rate = Field(description="the failure rate (failure score >= fail_at)")
    kinds: list[KindRate] = Field(description="each signal kind its units carry, flagged above the overall share "
                                              "first, then by the ratio to the overall share")

    @property
    def excess(self) -> float:
        """Failed units beyond what the overall rate predicts for a group this size."""
        return self.failed.units - self.units * self.failed.overall

    @property
    def top_kind(self) -> KindRate | None:
        """The kind most over-represented here, when its interval excludes the overall share."""
        return next((k for k in self.kinds if k.direction == "higher"), None)


class WorkflowReport(BaseModel):
    """Every unit grouped by workflow (:func:`workflow_report`)."""

    model_config = ConfigDict(frozen=True)

    units: int = Field(ge=0, description="all units of the store")
    failed: int = Field(ge=0, description="failed units among them")
    overall_rate: float = Field(ge=0, le=1, description="failed / units (0 without units)")
    confidence: float = 0.95
    unscanned: int = Field(0, ge=0, description="units whose workflow was computed here (never scanned)")
    workflows: list[Workflow] = Field(description="flagged above the overall rate first, then by excess failures")

    @property
    def flagged(self) -> list[Workflow]:
        """Workflows whose failure-rate interval lies above the overall rate."""
        return [w for w in self.workflows if w.failed.direction == "higher"]


def rate(k: int, n: int, overall: float) -> Rate:
    """``k / n`` with its 95% Wilson interval and whether it excludes ``overall``."""
    low, high = wilson_interval(k, n)
    direction: Direction = "higher" if low > overall else "lower" if high < overall else "same"
    return Rate(units=k, rate=k / n, low=low, high=high, overall=overall, direction=direction)


def _keys(store: Store, settings: SignalSettings, scope: EnvScope | None) -> tuple[dict[str, str], int]:
    """``({unit id: workflow key}, units never scanned)`` of every stored unit in ``scope`` (None: all)."""
    with store.session() as s:
        keys = dict(s.execute(select(SignalScanRow.unit_id, SignalScanRow.workflow)).all())
        ids = list(s.scalars(select(UnitRow.unit_id).where(env_condition(scope)).order_by(UnitRow.unit_id)))
    missing = [u for u in ids if not keys.get(u)]
    for i in range(0, len(missing), _CHUNK):
        for unit in store.units(missing[i:i + _CHUNK]):
            keys[unit.unit_id] = workflow_key(unit_view(unit), settings.long_session.read_only_prefixes)
    return {u: keys[u] for u in ids if u in keys}, len(missing)


def _first_request(steps: Sequence[Step]) -> str:
    """The first user turn of a step timeline, variables masked ('' when there is none)."""
    first = next((s.text for s in steps if s.kind == "user"), "")
    words = [w for w in first[:600].split() if w.lower().strip(".,!?;:'\"()") not in FILLER]
    return mask_variables(" ".join(words))


def _sample(unit_ids: Sequence[str], n: int = LABEL_SAMPLE) -> list[str]:
    """The same ``n`` units every time (smallest sha256 of the id), whatever order they come in."""
    return sorted(unit_ids, key=lambda u: hashlib.sha256(u.encode()).hexdigest())[:n]


def _request_words(store: Store, groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """Per workflow key, the words of its units' first user turns that set it apart (c-TF-IDF)."""
    names = list(groups)
    docs: list[str] = []
    classes: list[int] = []
    for n, key in enumerate(names):
        for unit in store.units(_sample(groups[key])):
            docs.append(_first_request(step_timeline(unit)))
            classes.append(n)
    words = class_tfidf(docs, classes, top_n=LABEL_WORDS) if docs else {}
    return {key: words.get(n, []) for n, key in enumerate(names)}


def _split(key: str) -> tuple[str, str | None]:
    source, _, action = key.rpartition(" | ")
    return (source, None if action == NO_ACTION else action) if source else (key, None)


def workflow_label(source: str, action: str | None, words: Sequence[str], with_source: bool) -> str:
    """E.g. ``return delivered order items, asked about refund, broken [retail.json]``."""
    head = action.replace("_", " ") if action else "no action taken"
    label = f"{head}, asked about {', '.join(words)}" if words else head
    return f"{label} [{source.split(':', 1)[-1]}]" if with_source else label


def _workflow(key: str, members: list[str], failed: set[str], kinds: dict[str, set[str]], overall: float,
              kind_overall: dict[str, float], label: str) -> Workflow:
    counts: dict[str, int] = defaultdict(int)
    for unit_id in members:
        for kind in kinds.get(unit_id, ()):
            counts[kind] += 1
    n = len(members)
    rated = [KindRate(kind=k, **rate(c, n, kind_overall[k]).model_dump(exclude={"flagged"}))
             for k, c in counts.items()]
    rated.sort(key=lambda r: (r.direction != "higher", -r.rate / max(r.overall, 1e-9), r.kind))
    source, action = _split(key)
    return Workflow(key=key, label=label, source=source, action=action, units=n,
                    failed=rate(sum(u in failed for u in members), n, overall), kinds=rated)


def workflow_report(store: Store, settings: SignalSettings | None = None, env: str | None = None) -> WorkflowReport:
    """Group every unit by workflow and compare each group's failure and signal rates with the
    overall ones (see module docstring).

    Args:
        store: the store (units, their scans and signals; never-scanned units are loaded once).
        settings: the ``[signals]`` section (read-only verbs for never-scanned units; default: the store's).
        env: the environment whose units are grouped (None: ``[environments] production``; ``all``: every
            unit), so evaluation runs never move production's failure rates.

    Returns:
        the report; no workflows when the store holds no unit.
    """
    cfg = settings or store.signals
    keys, unscanned = _keys(store, cfg, store.env_scope(env))
    failed = set(store.failed_unit_ids()) & set(keys)
    kinds = unit_kinds(store)
    total = len(keys)
    overall = len(failed) / total if total else 0.0
    kind_units: dict[str, int] = defaultdict(int)
    for unit_id in keys:
        for kind in kinds.get(unit_id, ()):
            kind_units[kind] += 1
    kind_overall = {k: c / total for k, c in kind_units.items()}
    groups: dict[str, list[str]] = defaultdict(list)
    for unit_id, key in keys.items():
        groups[key].append(unit_id)
    words = _request_words(store, groups)
    several = len({_split(k)[0] for k in groups}) > 1
    flows = [_workflow(k, m, failed, kinds, overall, kind_overall,
                       workflow_label(*_split(k), words[k], several)) for k, m in groups.items()]
    flows.sort(key=lambda w: (w.failed.direction != "higher", -w.excess, -w.units, w.key))
    return WorkflowReport(units=total, failed=len(failed), overall_rate=overall, unscanned=unscanned, workflows=flows)
