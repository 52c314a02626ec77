"""Online scoring of production: sample completed units per active evaluator and score them in a
background worker, with full lineage, at most once per evaluator version. The OTLP receiver only
stores spans: sampling, completion and scoring all happen here, off the request path, in
``assay worker`` or the separate process of ``assay serve --worker``.

**Sampling** (:func:`sampled`). Each active evaluator scores a share ``sample_rate`` (evaluator
YAML, default 0.10) of the units of production (``[environments] production``; another environment, or
every unit, with ``--env``): evaluation and simulation runs never enter the production sample. A unit
is in when ``u < rate`` where ``u`` is the first 8 bytes of
``SHA-256(evaluator name + NUL + unit id)`` read as an integer over 2**64 (uniform on [0, 1)).
So the decision is the same in every process and on every pass, a new version of an evaluator
samples the same units as the old one (comparable over time), raising the rate only adds units,
and two evaluators sample independently of each other.

**Completion** (:func:`completion`), decided on the stored spans alone (``start_ns``, the span's
``end_ns``, ``parent_span_id``), times being the producer's clock in ns since the epoch:

* a unit with an *open* span (``end_ns`` 0) is never complete;
* a unit with an *orphan* (a span whose parent is not stored, so the parent, a span that has not ended
  yet, is still expected) waits ``online.orphan_grace_s`` (default 600 s) after its newest span start
  or end; then the parent counts as lost: the orphans count as roots (they keep their ``orphan`` flag,
  shown by the API and the review page) and the rules below apply;
* a **trace** unit is complete when it has a root span (no parent) that has ended, and
  ``online.settle_s`` (default 5 s) have passed since the root's end (OTel SDKs export a span
  when it ends; the settle time lets the exporter's last batch of late children arrive);
* a **session** unit (kind ``session``) is complete after ``online.idle_timeout_s`` (default
  300 s) with no new span: its newest span start or end is that old.

A unit that grows after it was scored (a session resumed after the idle timeout) is not
scored again by the same evaluator version; the ledger keeps the content hash it was scored at.

**Selection.** A pass reads what changed, not the tables: the units ingested since the previous
pass (a keyset walk of the ``units (ingested_at, unit_id)`` index from the newest one seen, less
a 60 s overlap for rows committed late), sampled once as they arrive; per evaluator version, the
ledger rows of its sampled units still waiting; and span times only for units whose content
changed. The whole ``units`` index is walked once per evaluator version and sample rate, on the
worker's first pass with it. (The failure-signal step below still finds the units to scan by reading
the units with their ``signal_scans`` rows whole, once a pass.)

**Idempotency.** The ``online_scores`` ledger has one row per (evaluator name, version, unit):
a worker claims units before scoring them (a lease of ``online.claim_lease_s``) and writes the
score and the ledger's ``score_id`` in one transaction, so concurrent workers never score a unit
twice, and a worker that died only delays its claimed units by the lease.

**Lineage.** Scores go to the ``scores`` table under one run of kind ``online`` per worker
(``run_id`` on every score), written with their :class:`~assay._store.scores.Lineage` through the
one writer (:func:`assay._store.scores.add_scores`): the run's parameters (:class:`OnlineParams`)
record, per evaluator version, the evaluator name and version, the judge model and its
parameters, the ground-truth dataset version it was calibrated on and its sample rate. A share
``online.audit_share`` (default 2%) of scored units, deterministic by unit id (:func:`audited`),
also goes to the judge-audit queue (:mod:`assay.suite.audit`).

**Failure signals.** Each pass first runs the failure-signal detectors on complete units that need it
(:func:`assay.signals.units_to_scan`: never scanned, grown, or scanned under other detectors), up to
:data:`SCAN_BATCH` of them: the OTLP receiver records explicit feedback as it arrives but never waits
for detectors. Every failed score the worker writes becomes a signal in the one score writer.

**Failure signatures.** At the end of a pass, at most once per ``online.signatures_interval_s``
(default 300 s; 0: every pass; None: never), the worker brings the failure signatures up to date with
the signals that arrived: failed units the signatures have not seen join the nearest signature or are
marked new, and pending new units that group form a new signature
(:func:`assay.signatures.update_signatures`; a full build when nothing is built yet); then it
evaluates every signature's lifecycle (:func:`assay.signatures.update_lifecycle`); a worker of another
environment (``--env``) leaves them alone, they are production's. A failed online
score thus reaches a signature on the pass that wrote it, or the first pass after the interval.
"""

from __future__ import annotations

import hashlib
import os
import socket
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import and_, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as OrmSession

from assay._store import Store
from assay._store.environments import check_environment
from assay._store.scores import Lineage, RunParams, add_scores, finish_run, new_run
from assay._store.tables import AuditItemRow, OnlineScoreRow, SpanRow, UnitRow, utcnow
from assay.calibration.certified import judge_change_of, refuse_judge_changes
from assay.evaluators import EvaluationResult, EvaluatorDef, content_version, evaluate_many
from assay.evaluators.lineage import lineage_for, new_score
from assay.evaluators.results import Evaluation
from assay.evaluators.runner import judge_settings_for
from assay.models import JudgeClient
from assay.settings import JudgeSettings, OnlineSettings, Settings
from assay.settings.run_kinds import RunKind

_CHUNK = 500
"""Unit ids per completion, ledger or walk query."""
_OVERLAP = timedelta(seconds=60)
"""How far before the newest ``ingested_at`` seen each pass walks the units again (late-committed rows)."""
SCAN_BATCH = 200
"""Complete units whose failure signals a pass detects at most."""


class StopFlag(Protocol):
    """What the worker loop polls to stop: a ``threading.Event`` or ``multiprocessing.Event``."""

    def is_set(self) -> bool: ...

    def wait(self, timeout: float | None = None) -> bool: ...


def _fraction(key: str) -> float:
    """A uniform number in [0, 1) from SHA-256 of ``key`` (first 8 bytes / 2**64)."""
    return int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big") / 2.0**64


def sampled(evaluator_name: str, unit_id: str, rate: float) -> bool:
    """Whether an evaluator's online sample at ``rate`` (in [0, 1]) holds a unit (see module docstring).

    Deterministic: the same (name, unit id, rate) always gives the same answer; over many
    units the share in is ``rate`` (binomial error); a unit in at rate r is in at any rate above r.
    """
    return rate > 0 and _fraction(f"{evaluator_name}\x00{unit_id}") < rate


def audited(unit_id: str, share: float) -> bool:
    """Whether a unit scored online goes to the judge-audit queue at ``share`` (in [0, 1]).

    Keyed by the unit id alone (salt ``audit``), so an audited unit is audited for every
    evaluator that scored it (one reading by a person serves them all), independently of sampling.
    """
    return share > 0 and _fraction(f"audit\x00{unit_id}") < share


# --- completion -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Completion:
    """Whether a unit is complete at ``now`` (see module docstring) and why not."""

    unit_id: str
    complete: bool
    reason: str


@dataclass(frozen=True)
class UnitTimes:
    """What completion needs of a unit's stored spans (all times ns since the epoch, producer clock)."""

    kind: str
    spans: int
    open_spans: int
    orphans: int
    root_end_ns: int | None
    last_activity_ns: int
    content_hash: str = ""
    orphan_end_ns: int | None = None
    """The latest end of an orphan span (None without orphans): a root once the parent counts as lost."""


def _times(kind: str, rows: list[tuple[str, str, str | None, int, int]], content_hash: str = "") -> UnitTimes:
    """``rows``: (trace id, span id, parent span id, start ns, end ns) of one unit."""
    ids = {(t, sid) for t, sid, _, _, _ in rows}
    roots = [end for _, _, parent, _, end in rows if not parent]
    orphans = [end for t, _, parent, _, end in rows if parent and (t, parent) not in ids]
    return UnitTimes(kind=kind, spans=len(rows), open_spans=sum(end <= 0 for *_, end in rows),
                     orphans=len(orphans), root_end_ns=max(roots) if roots else None,
                     last_activity_ns=max((max(st, end) for *_, st, end in rows), default=0),
                     content_hash=content_hash, orphan_end_ns=max(orphans) if orphans else None)


def decide(unit_id: str, times: UnitTimes, now_ns: int, cfg: OnlineSettings) -> Completion:
    """Apply the completion rules (module docstring) to one unit's span times at ``now_ns``."""
    if not times.spans:
        return Completion(unit_id, False, "no spans")
    if times.open_spans:
        return Completion(unit_id, False, "a span is still open (no end time)")
    lost = ""
    if times.orphans:
        waited_s = (now_ns - times.last_activity_ns) / 1e9
        if waited_s < cfg.orphan_grace_s:
            return Completion(unit_id, False, f"a parent span is still expected (orphan span; counted lost "
                                              f"{cfg.orphan_grace_s:g} s after the newest span, {waited_s:.0f} s now)")
        lost = f"; {times.orphans} orphan span(s) whose parent never arrived (grace {cfg.orphan_grace_s:g} s)"
    if times.kind == "session":
        idle_s = (now_ns - times.last_activity_ns) / 1e9
        if idle_s < cfg.idle_timeout_s:
            return Completion(unit_id, False, f"session active {idle_s:.0f} s ago "
                                              f"(idle timeout {cfg.idle_timeout_s:g} s)")
        return Completion(unit_id, True, f"session idle for {idle_s:.0f} s{lost}")
    ends = [e for e in (times.root_end_ns, times.orphan_end_ns if lost else None) if e is not None]
    if not ends:
        return Completion(unit_id, False, "root span not received yet")
    since_s = (now_ns - max(ends)) / 1e9
    if since_s < cfg.settle_s:
        return Completion(unit_id, False, f"root span ended {since_s:.1f} s ago (settle {cfg.settle_s:g} s)")
    return Completion(unit_id, True, f"root span ended{lost}")


def unit_times(store: Store, unit_ids: Sequence[str]) -> dict[str, UnitTimes]:
    """Span times of units, read from the store (one query per 500 units; unknown ids: no spans)."""
    out: dict[str, UnitTimes] = {}
    ids = list(dict.fromkeys(unit_ids))
    end = SpanRow.data["end_ns"].as_string()  # JSON text: an ns time overflows PostgreSQL's INTEGER cast
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        rows: dict[str, list[tuple[str, str, str | None, int, int]]] = {u: [] for u in chunk}
        with store.session() as s:
            units = {u: (k, h) for u, k, h in s.execute(select(UnitRow.unit_id, UnitRow.kind, UnitRow.content_hash)
                                                         .where(UnitRow.unit_id.in_(chunk)))}
            q = select(SpanRow.unit_id, SpanRow.trace_id, SpanRow.span_id, SpanRow.parent_span_id, SpanRow.start_ns,
                       end).where(SpanRow.unit_id.in_(chunk))
            for uid, t, sid, parent, start, stop in s.execute(q):
                rows[uid].append((t, sid, parent, int(start or 0), int(stop or 0)))
        for uid in chunk:
            kind, content_hash = units.get(uid, ("trace", ""))
            out[uid] = _times(kind, rows[uid], content_hash)
    return out


def completion(store: Store, unit_ids: Sequence[str], settings: OnlineSettings,
               now_ns: int | None = None) -> dict[str, Completion]:
    """Decide completion of units from their stored spans (rules in the module docstring).

    Args:
        store: the store.
        unit_ids: units to decide (unknown ids are reported not complete, "no spans").
        settings: ``idle_timeout_s`` and ``settle_s``.
        now_ns: the present in ns since the epoch (default: the wall clock).

    Returns:
        ``{unit id: Completion}`` for every id given.
    """
    now_ns = time.time_ns() if now_ns is None else now_ns
    return {uid: decide(uid, t, now_ns, settings) for uid, t in unit_times(store, unit_ids).items()}


# --- the worker -------------------------------------------------------------------------------
class WorkerInfo(BaseModel):
    """The process that scored an online run."""

    model_config = ConfigDict(frozen=True)

    host: str
    pid: int


class OnlineParams(RunParams):
    """What an online run (kind ``online``) records: its worker and audit share; the lineage of each
    evaluator version it scored with (sample rate included) is in ``lineage``."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    worker: WorkerInfo | None = None
    audit_share: float = Field(default=0.0, description="share of scored units sent to the judge audit")


class EvaluatorPass(BaseModel):
    """One evaluator's share of a pass: units scored, failed (error / unscored / not applicable),
    sent to audit, and sampled units still waiting for completion."""

    model_config = ConfigDict(frozen=True)

    evaluator: str
    evaluator_version: str
    scored: int = 0
    failed: int = 0
    audited: int = 0
    waiting: int = 0


class PassReport(BaseModel):
    """What one worker pass did (or, from :meth:`OnlineWorker.run`, all passes added up)."""

    model_config = ConfigDict(frozen=True)

    run_id: str | None = Field(description="the online run the scores went to; None when nothing was scored")
    evaluators: tuple[EvaluatorPass, ...] = ()
    passes: int = 1
    signals_scanned: int = Field(default=0, description="complete units whose failure signals were detected")
    signatures_assigned: int = Field(default=0, description="failed units put in an existing signature")
    signatures_created: int = Field(default=0, description="failure signatures formed (or built)")
    lifecycle_changes: int = Field(default=0, description="signature lifecycle changes recorded")

    @property
    def scored(self) -> int:
        return sum(e.scored for e in self.evaluators)

    @property
    def failed(self) -> int:
        return sum(e.failed for e in self.evaluators)

    @property
    def audited(self) -> int:
        return sum(e.audited for e in self.evaluators)

    @property
    def waiting(self) -> int:
        return sum(e.waiting for e in self.evaluators)

    @property
    def did_work(self) -> bool:
        return self.scored + self.failed + self.signals_scanned + self.signatures_assigned + \
            self.signatures_created + self.lifecycle_changes > 0

    def line(self) -> str:
        """One human-readable progress line."""
        scanned = [f"signals of {self.signals_scanned} units"] if self.signals_scanned else []
        if self.signatures_assigned + self.signatures_created + self.lifecycle_changes:
            scanned.append(f"signatures: {self.signatures_assigned} units assigned, {self.signatures_created} "
                           f"new, {self.lifecycle_changes} lifecycle changes")
        if not self.evaluators:
            return "; ".join([*scanned, "no active evaluator"])
        parts = [f"{e.evaluator}@{e.evaluator_version}: {e.scored} scored, {e.failed} not scored (errors, unscored "
                 f"or not applicable), {e.audited} to audit, {e.waiting} waiting" for e in self.evaluators]
        return "; ".join(scanned + parts)


@dataclass
class _Active:
    defn: EvaluatorDef
    version: str
    dataset_version: int | None

    @property
    def key(self) -> str:
        return f"{self.defn.name}@{self.version}"


class OnlineWorker:
    """Scores sampled, complete, not-yet-scored units with every active evaluator (module docstring).

    Args:
        store: the store (its own; a worker process opens one from the settings' URL).
        settings: workspace settings: ``evaluators_path()`` (re-read every pass, so an evaluator
            activated or edited while the worker runs is picked up), ``judge``, ``online``.
        judge: the judge for every ``llm_judge`` evaluator; None builds one per judge model
            from the settings (cached in the store's judge cache), loaded once and kept.
        log: called with one line per pass that did something (and on errors).
        env: the environment whose units are sampled (``--env``): None is ``[environments] production``,
            ``all`` every unit; units stored without one count as ``[environments] default``. Only a
            production worker brings the signatures up to date at the end of a pass (they are
            production's; ``assay signatures --env`` shows another environment's without storing them).
        allow_judge_change: score with a judge other than the one an evaluator was certified with (recorded
            in the scores' lineage); otherwise :meth:`run` refuses at the start (:meth:`check_judges`) and a
            pass skips such an evaluator with a log line.

    Raises:
        UsageError: ``env`` names an environment the store does not know
            (:func:`assay._store.environments.check_environment`).
    """

    def __init__(self, store: Store, settings: Settings, judge: JudgeClient | None = None,
                 log: Callable[[str], None] | None = None, env: str | None = None,
                 allow_judge_change: bool = False) -> None:
        self.store = store
        self.allow_judge_change = allow_judge_change
        self._judge_changes: dict[str, str | None] = {}
        self._refusals: set[str] = set()
        self.settings = settings
        self.env = env
        self.scope = check_environment(store, settings.environments.scope(env))
        self.cfg = settings.online
        self.judge = judge
        self.log = log or (lambda _line: None)
        self.run_id: str | None = None
        self._judges: dict[str, JudgeClient] = {}
        self._pendings: dict[tuple[str, float], dict[str, None]] = {}
        self._newest: datetime | None = None
        self._recent: dict[str, datetime] = {}
        self._times: dict[str, UnitTimes] = {}
        self._totals: dict[str, EvaluatorPass] = {}
        self._passes = 0
        self._scanned = 0
        self._signatures_at: float | None = None
        self._signature_totals = [0, 0, 0]

    # -- public ----------------------------------------------------------------------------
    def run_pass(self, stop: StopFlag | None = None, now_ns: int | None = None) -> PassReport:
        """One pass: for each active evaluator, score up to ``online.batch_size`` complete sampled
        units not scored online by its version yet (oldest ingested first).

        ``now_ns`` (ns since the epoch; default the wall clock) is the time the pass runs at: units are
        complete or not at that time, and the scores (``created_at``), the failure signals of failed scores,
        the ledger's ``scored_at``, signatures formed and lifecycle changes are dated by it. A replay of past
        traffic (``assay demo``) passes the day it replays; claims and their leases keep the wall clock.

        Raises:
            ConfigError: an evaluator file is invalid.
            MissingDependency, EnvironmentProblem: the judge cannot run.
        """
        from assay.suite.gate import active_evaluators

        suite = [_Active(d, content_version(d), ds) for d, ds in
                 active_evaluators(self.store, self.settings.evaluators_path())]
        decided: dict[str, Completion] = {}
        scanned = self._scan_signals(decided, now_ns)
        units = self._new_units()
        out: list[EvaluatorPass] = []
        for ev in suite:
            if stop is not None and stop.is_set():
                break
            if self._refused(ev):
                continue
            todo, waiting = self._todo(ev, units, decided, now_ns)
            scored = failed = audit = 0
            step = max(1, self.settings.judge.concurrency) if ev.defn.uses_judge else 16
            for i in range(0, len(todo), step):
                if stop is not None and stop.is_set():
                    break
                s, f, a = self._score(ev, todo[i:i + step], now_ns)
                scored, failed, audit = scored + s, failed + f, audit + a
            out.append(EvaluatorPass(evaluator=ev.defn.name, evaluator_version=ev.version, scored=scored,
                                     failed=failed, audited=audit, waiting=waiting))
        assigned, created, changes = self._update_signatures(now_ns)
        report = PassReport(run_id=self.run_id, evaluators=tuple(out), signals_scanned=scanned,
                            signatures_assigned=assigned, signatures_created=created, lifecycle_changes=changes)
        self._add(report)
        return report

    def _update_signatures(self, now_ns: int | None) -> tuple[int, int, int]:
        """Bring the signatures and their lifecycle up to date, at most once per ``signatures_interval_s``
        (module docstring). Returns ``(units assigned, signatures created, lifecycle changes)``; a failure
        (say the embedding model cannot load) is logged and retried after the interval, scoring goes on."""
        from assay.signatures import build_signatures, failed_unit_ids, map_points, update_lifecycle, update_signatures

        interval = self.cfg.signatures_interval_s
        production = self.scope is not None and self.scope.name == self.settings.environments.production
        if interval is None or not production:  # another environment's worker leaves them alone
            return 0, 0, 0
        if self._signatures_at is not None and time.monotonic() - self._signatures_at < interval:
            return 0, 0, 0
        self._signatures_at = time.monotonic()
        now = _at(now_ns)
        assigned = created = 0
        try:
            known = {p[0] for p in map_points(self.store)}
            if any(u not in known for u in failed_unit_ids(self.store, self.env)):
                if known:
                    result = update_signatures(self.store, self.settings, env=self.env, now=now)
                    assigned, created = len(result.assigned), len(result.new_signatures)
                else:
                    created = len(build_signatures(self.store, self.settings, env=self.env))
            changes = len(update_lifecycle(self.store, self.settings, now, env=self.env))
        except Exception as exc:  # a worker outlives a missing embedding model; the scores are kept
            self.log(f"signatures update failed: {type(exc).__name__}: {exc}")
            return assigned, created, 0
        return assigned, created, changes

    def _scan_signals(self, decided: dict[str, Completion], now_ns: int | None) -> int:
        """Detect the failure signals of up to ``SCAN_BATCH`` complete units that need it (never scanned,
        grown, or scanned under other detectors), oldest first: off the request path, so ingestion never
        waits for detectors. Returns the number of units scanned."""
        from assay.signals import scan_units, units_to_scan

        todo = units_to_scan(self.store, self.settings.signals)
        unknown = [u for u in todo if u not in decided]
        if unknown:
            decided.update(self._completion(unknown, time.time_ns() if now_ns is None else now_ns))
        ready = [u for u in todo if decided[u].complete][:SCAN_BATCH]
        if ready:
            scan_units(self.store, self.store.units(ready), self.settings.signals)
        return len(ready)

    def run(self, stop: StopFlag, once: bool = False, poll_interval_s: float | None = None,
            now_ns: int | None = None) -> PassReport:
        """Run passes until ``stop`` is set; with ``once``, until a pass finds nothing to score (drain).
        Every pass runs at ``now_ns`` (see :meth:`run_pass`; default the wall clock at each pass).

        A pass that scored something is followed at once by the next; an idle one waits
        ``poll_interval_s`` (default ``online.poll_interval_s``). With ``once`` errors propagate;
        otherwise a failed pass is logged and retried after the poll interval. The run is
        finished (summary and finish time) on return.

        Returns:
            all passes added up.

        Raises:
            JudgeChanged: see :meth:`check_judges`.
        """
        interval = self.cfg.poll_interval_s if poll_interval_s is None else poll_interval_s
        self.check_judges()
        try:
            while not stop.is_set():
                try:
                    report = self.run_pass(stop, now_ns)
                except Exception as exc:  # a long-running worker outlives a bad evaluator file or judge outage
                    if once:
                        raise
                    self.log(f"pass failed: {type(exc).__name__}: {exc}")
                    stop.wait(interval)
                    continue
                if report.did_work:
                    self.log(report.line())
                elif once:
                    break
                else:
                    stop.wait(interval)
        finally:
            self.close()
        return self.totals()

    def check_judges(self) -> None:
        """Refuse to start when an active evaluator's judge is not the one it was certified with.

        Raises:
            JudgeChanged: such an evaluator, and the worker was not told to allow it (names both judges).
        """
        from assay.suite.gate import active_evaluators

        suite = [_Active(d, content_version(d), ds) for d, ds in
                 active_evaluators(self.store, self.settings.evaluators_path())]
        refuse_judge_changes({ev.defn.name: c for ev in suite if (c := self._change(ev))}, self.allow_judge_change)

    def _change(self, ev: _Active) -> str | None:
        if ev.key not in self._judge_changes:
            judge, _ = self._judge_for(ev.defn)
            self._judge_changes[ev.key] = judge_change_of(self.store, ev.defn, judge, self.settings.judge)
        return self._judge_changes[ev.key]

    def _refused(self, ev: _Active) -> bool:
        """True (logged once) when ``ev``'s judge is not its certified one and that is not allowed."""
        refused = bool(self._change(ev)) and not self.allow_judge_change
        if refused and ev.key not in self._refusals:
            self._refusals.add(ev.key)
            self.log(f"not scoring {ev.key}: {self._change(ev)} (calibrate it again, or --allow-judge-change)")
        return refused

    def totals(self) -> PassReport:
        """All passes so far, added up."""
        assigned, created, changes = self._signature_totals
        return PassReport(run_id=self.run_id, evaluators=tuple(self._totals.values()), passes=self._passes,
                          signals_scanned=self._scanned, signatures_assigned=assigned, signatures_created=created,
                          lifecycle_changes=changes)

    def close(self) -> None:
        """Finish the online run (summary: counts per evaluator version), if one was started."""
        if self.run_id is not None:
            totals = self.totals()
            finish_run(self.store, self.run_id, {"scored": totals.scored, "failed": totals.failed,
                                                 "audited": totals.audited, "passes": totals.passes,
                                                 "evaluators": [e.model_dump() for e in totals.evaluators]})

    # -- selection ---------------------------------------------------------------------------
    def _walk(self, since: datetime | None) -> Iterator[tuple[str, datetime]]:
        """``(unit id, ingested_at)`` of units ingested at or after ``since`` (None: all), oldest first: a keyset
        walk of the ``units (ingested_at, unit_id)`` index, :data:`_CHUNK` rows a query, in the worker's
        environment."""
        from assay._store.environments import env_condition

        after: tuple[datetime, str] | None = None
        while True:
            q = select(UnitRow.unit_id, UnitRow.ingested_at).where(env_condition(self.scope))
            if since is not None:
                q = q.where(UnitRow.ingested_at >= since)
            if after is not None:
                q = q.where(or_(UnitRow.ingested_at > after[0],
                                and_(UnitRow.ingested_at == after[0], UnitRow.unit_id > after[1])))
            with self.store.session() as s:
                page = [(u, t) for u, t in s.execute(q.order_by(UnitRow.ingested_at, UnitRow.unit_id).limit(_CHUNK))]
            yield from page
            if len(page) < _CHUNK:
                return
            after = (page[-1][1], page[-1][0])

    def _new_units(self) -> list[str]:
        """Units ingested since the previous pass, oldest first (every stored unit on the first pass).

        The walk starts :data:`_OVERLAP` before the newest ``ingested_at`` seen, so a unit whose row was
        committed a little after its ``ingested_at`` time (a long ingest transaction) is still found; ids seen
        within the overlap are remembered and skipped.
        """
        since = None if self._newest is None else self._newest - _OVERLAP
        fresh = []
        for uid, at in self._walk(since):
            if uid not in self._recent:
                self._recent[uid] = at
                fresh.append(uid)
            self._newest = at if self._newest is None else max(self._newest, at)
        if self._newest is not None:
            horizon = self._newest - _OVERLAP
            self._recent = {u: t for u, t in self._recent.items() if t >= horizon}
        return fresh

    def _pending(self, ev: _Active, new_units: list[str]) -> dict[str, None]:
        """The sampled units this evaluator version has not scored yet, oldest first. Built from every stored
        unit the first time a version (or a sample rate) is seen, then from the units new since the last pass."""
        key = (ev.key, ev.defn.sample_rate)
        pending = self._pendings.get(key)
        ids: Iterable[str] = new_units
        if pending is None:
            pending = self._pendings[key] = {}
            ids = (u for u, _ in self._walk(None))
        pending.update(dict.fromkeys(u for u in ids if sampled(ev.defn.name, u, ev.defn.sample_rate)))
        return pending

    def _taken(self, ev: _Active, pending: dict[str, None]) -> set[str]:
        """Of ``pending``, the units a live claim holds; units this version scored online leave ``pending``."""
        cutoff = utcnow() - timedelta(seconds=self.cfg.claim_lease_s)
        ids = list(pending)
        live: set[str] = set()
        with self.store.session() as s:
            for i in range(0, len(ids), _CHUNK):
                q = select(OnlineScoreRow.unit_id, OnlineScoreRow.score_id).where(
                    OnlineScoreRow.evaluator_name == ev.defn.name, OnlineScoreRow.evaluator_version == ev.version,
                    OnlineScoreRow.unit_id.in_(ids[i:i + _CHUNK]),
                    or_(OnlineScoreRow.score_id.is_not(None), OnlineScoreRow.claimed_at >= cutoff))
                for uid, score_id in s.execute(q):
                    if score_id is None:
                        live.add(uid)
                    else:
                        pending.pop(uid, None)
        return live

    def _todo(self, ev: _Active, new_units: list[str], decided: dict[str, Completion],
              now_ns: int | None) -> tuple[list[str], int]:
        """Up to ``batch_size`` complete candidates, and how many sampled ones are still waiting."""
        pending = self._pending(ev, new_units)
        taken = self._taken(ev, pending)
        candidates = [u for u in pending if u not in taken]
        unknown = [u for u in candidates if u not in decided]
        if unknown:
            decided.update(self._completion(unknown, time.time_ns() if now_ns is None else now_ns))
        ready = [u for u in candidates if decided[u].complete]
        return ready[:self.cfg.batch_size], len(candidates) - len(ready)

    def _completion(self, unit_ids: list[str], now_ns: int) -> dict[str, Completion]:
        """:func:`completion`, reading span times only for units whose content changed since the
        last pass (their content hash), so waiting sessions cost one cheap column read per pass."""
        with self.store.session() as s:
            hashes: dict[str, str] = {}
            for i in range(0, len(unit_ids), _CHUNK):
                q = select(UnitRow.unit_id, UnitRow.content_hash).where(UnitRow.unit_id.in_(unit_ids[i:i + _CHUNK]))
                hashes.update({u: h for u, h in s.execute(q)})
        stale = [u for u in unit_ids if u not in self._times or self._times[u].content_hash != hashes.get(u, "")]
        self._times.update(unit_times(self.store, stale))
        return {u: decide(u, self._times[u], now_ns, self.cfg) for u in unit_ids}

    # -- scoring -----------------------------------------------------------------------------
    def _judge_for(self, defn: EvaluatorDef) -> tuple[JudgeClient | None, JudgeSettings]:
        js = judge_settings_for(defn, self.settings.judge)
        if not defn.uses_judge:
            return None, js
        if self.judge is not None:
            return self.judge, js
        key = js.model_dump_json()
        if key not in self._judges:
            from assay.models import make_judge

            self._judges[key] = make_judge(js, self.store)
        return self._judges[key], js

    def _ensure_run(self) -> str:
        """The worker's online run, created on first use."""
        if self.run_id is None:
            self.run_id = new_run(self.store, RunKind.ONLINE, OnlineParams(
                worker=WorkerInfo(host=socket.gethostname(), pid=os.getpid()), audit_share=self.cfg.audit_share))
        return self.run_id

    def _claim(self, ev: _Active, run_id: str, unit_ids: list[str]) -> list[str]:
        """Take units for this worker: new ledger rows, or claims whose lease ran out. Returns those taken."""
        now = utcnow()
        cutoff = now - timedelta(seconds=self.cfg.claim_lease_s)
        key = (OnlineScoreRow.evaluator_name == ev.defn.name, OnlineScoreRow.evaluator_version == ev.version)
        try:
            with self.store.session() as s:
                have = set(s.scalars(select(OnlineScoreRow.unit_id).where(*key, OnlineScoreRow.unit_id.in_(unit_ids))))
                got = []
                for uid in unit_ids:
                    if uid not in have:
                        s.add(OnlineScoreRow(evaluator_name=ev.defn.name, evaluator_version=ev.version, unit_id=uid,
                                             run_id=run_id, claimed_at=now))
                        got.append(uid)
                        continue
                    res = s.execute(update(OnlineScoreRow).where(
                        *key, OnlineScoreRow.unit_id == uid, OnlineScoreRow.score_id.is_(None),
                        OnlineScoreRow.claimed_at < cutoff).values(run_id=run_id, claimed_at=now))
                    if getattr(res, "rowcount", 0) == 1:
                        got.append(uid)
        except IntegrityError:  # another worker claimed one of them at the same moment: next pass
            return []
        return got

    def _score(self, ev: _Active, unit_ids: list[str], now_ns: int | None = None) -> tuple[int, int, int]:
        """Claim, score and record some units, dated ``now_ns`` (None: the wall clock): (scored, failed, sent to
        audit)."""
        judge, _ = self._judge_for(ev.defn)
        run_id = self._ensure_run()
        claimed = self._claim(ev, run_id, unit_ids)
        if not claimed:
            return 0, 0, 0
        lineage = lineage_for(ev.defn, run_id, RunKind.ONLINE, ev.dataset_version,
                              judge.model_name if judge is not None else None, judge, self.settings.judge,
                              sample_rate=ev.defn.sample_rate, judge_change=self._change(ev))
        results = evaluate_many(ev.defn, self.store.units(claimed), judge, self.settings.judge, store=self.store)
        return self._record(ev, lineage, results, _at(now_ns))

    def _record(self, ev: _Active, lineage: Lineage, results: Sequence[Evaluation],
                at: datetime | None = None) -> tuple[int, int, int]:
        """Score rows (the one writer, with their lineage, made at ``at``: default now), the ledger and audit
        items, in one transaction; a unit whose claim another worker took over meanwhile is dropped."""
        scored = failed = audit = 0
        now = at or utcnow()
        with self.store.session() as s:
            ledgers = self._held(s, ev, lineage.run_id, [r.unit_id for r in results])
            mine = [r for r in results if r.unit_id in ledgers]
            score_ids = add_scores(s, lineage, [new_score(r) for r in mine], now)
            hashes = {u: h for u, h in s.execute(select(UnitRow.unit_id, UnitRow.content_hash)
                                                 .where(UnitRow.unit_id.in_(list(score_ids))))}
            queued = set(s.scalars(select(AuditItemRow.unit_id).where(  # audited before (a claim retaken): once only
                AuditItemRow.evaluator_name == ev.defn.name, AuditItemRow.evaluator_version == ev.version,
                AuditItemRow.unit_id.in_(list(score_ids)))))
            for r in (r for r in mine if r.unit_id in score_ids):
                ok = isinstance(r, EvaluationResult)
                ledger = ledgers[r.unit_id]
                ledger.score_id, ledger.scored_at = score_ids[r.unit_id], now
                ledger.content_hash = hashes.get(r.unit_id, "")
                scored, failed = scored + ok, failed + (not ok)
                if ok and audited(r.unit_id, self.cfg.audit_share) and r.unit_id not in queued:
                    s.add(AuditItemRow(unit_id=r.unit_id, evaluator_name=ev.defn.name, evaluator_version=ev.version,
                                       criterion_name=ev.defn.criterion.name,
                                       criterion_version=ev.defn.criterion.version, score_id=score_ids[r.unit_id]))
                    audit += 1
        return scored, failed, audit

    @staticmethod
    def _held(s: OrmSession, ev: _Active, run_id: str, unit_ids: list[str]) -> dict[str, OnlineScoreRow]:
        """The ledger rows of ``unit_ids`` this run still holds unscored (its claim not taken over), by unit id."""
        q = select(OnlineScoreRow).where(OnlineScoreRow.evaluator_name == ev.defn.name,
                                         OnlineScoreRow.evaluator_version == ev.version,
                                         OnlineScoreRow.unit_id.in_(unit_ids))
        return {r.unit_id: r for r in s.scalars(q) if r.run_id == run_id and r.score_id is None}

    def _add(self, report: PassReport) -> None:
        self._passes += 1
        self._scanned += report.signals_scanned
        for i, n in enumerate((report.signatures_assigned, report.signatures_created, report.lifecycle_changes)):
            self._signature_totals[i] += n
        for e in report.evaluators:
            key = f"{e.evaluator}@{e.evaluator_version}"
            old = self._totals.get(key)
            self._totals[key] = e if old is None else e.model_copy(update={
                "scored": old.scored + e.scored, "failed": old.failed + e.failed,
                "audited": old.audited + e.audited})


def _at(now_ns: int | None) -> datetime | None:
    """A pass time in ns since the epoch as a UTC datetime (None stays None: the wall clock)."""
    return None if now_ns is None else datetime.fromtimestamp(now_ns / 1e9, tz=UTC)


def run_worker(settings: Settings, stop: StopFlag, once: bool = False, judge: JudgeClient | None = None,
               log: Callable[[str], None] | None = None, niceness: int = 0, env: str | None = None,
               allow_judge_change: bool = False) -> PassReport:
    """Open the store from the settings and run an :class:`OnlineWorker` until ``stop`` (the body
    of ``assay worker`` and of the ``assay serve --worker`` process).

    Args:
        settings: workspace settings (the store URL must name a database another process can open).
        stop: set it to stop after the current chunk of units.
        once: drain what is complete now, then return.
        niceness: added to the process's CPU niceness first (0: unchanged; POSIX only).
        env: the environment sampled (see :class:`OnlineWorker`).
        allow_judge_change: see :class:`OnlineWorker`.
    """
    if niceness and hasattr(os, "nice"):
        os.nice(niceness)
    store = Store(settings.resolved_store_url(), settings.signals, settings.environments)
    try:
        return OnlineWorker(store, settings, judge, log, env, allow_judge_change).run(stop, once=once)
    finally:
        store.close()
