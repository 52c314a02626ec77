"""``assay signals``: failure signals per source and kind, one unit's signals, and ``update`` (what is missing)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import AppContext, console, get_ctx, handle_errors, progress_bar
from assay._store.spans import resolve_unit_id
from assay.exceptions import NotFoundError, UsageError
from assay.signals import FailureSignal, list_signals, signal_counts, units_to_scan, update_signals
from assay.signals.feedback import pending_feedback
from assay.signals.open_coding import open_code

signals_app = typer.Typer(help="Failure signals: what says a unit went wrong, found where production records no "
                          "outcome (feedback, conversation and behaviour cues, failed scores, labels).",
                          no_args_is_help=False)


def _by(signal: FailureSignal) -> str:
    """Who produced a signal, short: ``tool_loop@1``, ``refunds@3f2a…`` (evaluator), ``alice``, ``api``."""
    lin = signal.lineage.model_dump()
    name = lin.get("name") or lin.get("annotator") or lin.get("channel") or lin.get("model") or ""
    version = lin.get("version") or lin.get("prompt_version") or ""
    return f"{name}@{version}" if version else str(name)


def _signals_table(signals: list[FailureSignal], unit: str | None) -> Table:
    """The signals as a table (evidence cut to 160 characters; ``--json`` has it whole); without the unit
    column when they are one unit's."""
    table = Table(title=f"failure signals of {escape(unit)}" if unit else "failure signals")
    if unit is None:
        table.add_column("unit", overflow="fold")
    for name in ("step", "source", "kind", "strength"):
        table.add_column(name, no_wrap=True)
    table.add_column("evidence", ratio=1, min_width=30)
    table.add_column("by", overflow="fold")
    for sig in signals:
        evidence = sig.evidence if len(sig.evidence) <= 160 else sig.evidence[:159] + "…"
        table.add_row(*([escape(sig.unit_id)] if unit is None else []), str(sig.step or "-"), sig.source, sig.kind,
                      f"{sig.strength:.2f}", escape(evidence), escape(_by(sig)))
    return table


def _summary(app: AppContext, as_json: bool) -> None:
    store = app.store
    counts = signal_counts(store)
    units, failed = len(store.select_unit_ids()), len(store.failed_unit_ids())
    pending, unscanned = pending_feedback(store), len(units_to_scan(store, app.settings.signals))
    if as_json:
        console.print_json(json.dumps({"counts": [c.model_dump() for c in counts], "units": units, "failed": failed,
                                       "fail_at": store.signals.fail_at, "pending_feedback": pending,
                                       "units_to_scan": unscanned}))
        return
    table = Table("source", "kind", "signals", "units", title="failure signals by source and kind")
    for c in counts:
        table.add_row(c.source, c.kind, str(c.signals), str(c.units))
    console.print(table)
    console.print(f"{failed} of {units} units failed (failure score >= fail_at {store.signals.fail_at:g}); "
                  f"{pending} feedback pending")
    if unscanned:
        console.print(f"{unscanned} units not scanned as they are now: run `assay signals update`")


def _check_names(kind: str | None, source: str | None) -> None:
    """An unknown kind or source is a usage error naming the known ones, not an empty list."""
    from assay.signals.model import KIND_SOURCE

    if kind is not None and kind not in KIND_SOURCE:
        raise UsageError(f"unknown signal kind {kind!r}: one of {', '.join(sorted(KIND_SOURCE))}")
    if source is not None and source not in set(KIND_SOURCE.values()):
        raise UsageError(f"unknown signal source {source!r}: one of {', '.join(sorted(set(KIND_SOURCE.values())))}")


@signals_app.callback(invoke_without_command=True)
@handle_errors
def signals_cmd(
    ctx: typer.Context,
    unit: Annotated[str | None, typer.Option("--unit", "-u", help="Only this unit's signals.",
                                             envvar="ASSAY_SIGNALS_UNIT")] = None,
    kind: Annotated[str | None, typer.Option("--kind", "-k", help="Only this kind, e.g. thumbs_down, escalation.",
                                             envvar="ASSAY_SIGNALS_KIND")] = None,
    source: Annotated[str | None, typer.Option("--source", "-s", help="Only this source: outcome, error, feedback, "
                                               "cue, evaluator, label, flag, open_coding.",
                                               envvar="ASSAY_SIGNALS_SOURCE")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Signals listed at most.")] = 200,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """List failure signals: without options, counts per source and kind and how many units failed; with
    --unit, --kind or --source, the signals themselves (unit, step, strength, evidence, who found it)."""
    if ctx.invoked_subcommand is not None:
        return
    app = get_ctx(ctx)
    _check_names(kind, source)
    if unit is None and kind is None and source is None:
        _summary(app, as_json)
        return
    signals = list_signals(app.store, unit_id=unit, kind=kind, source=source, limit=limit)
    if unit is not None and not signals and resolve_unit_id(app.store, unit) is None:
        raise NotFoundError("unit", unit)  # exit 2, as for any unknown name
    if as_json:
        console.print_json(json.dumps([s.model_dump(mode="json") | {"key": s.key} for s in signals]))
    elif signals:
        console.print(_signals_table(signals, unit))
    else:
        console.print("no signals match")


@signals_app.command("update")
@handle_errors
def update_cmd(
    ctx: typer.Context,
    units: Annotated[str | None, typer.Option("--units", help="Only these units (a selection: all, prefix:TEXT, "
                                              "source:TEXT ...).", envvar="ASSAY_UNITS")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Compute what is missing: run the detectors on every unit not scanned as it is now (new, grown, or
    scanned under other detectors or thresholds; units ingested before signals existed), and attach pending
    feedback whose trace has arrived. When \\[signals.open_coding] is enabled, a judge then codes the ambiguous
    units (and a small random share) within the daily budget: run it daily, e.g. from cron."""
    app = get_ctx(ctx)
    ids = app.store.select_unit_ids(units) if units is not None else None
    with progress_bar("detecting signals", None) as advance:
        seen = [0]

        def step(done: int, total: int) -> None:
            advance(done - seen[0], total)
            seen[0] = done

        report = update_signals(app.store, app.settings.signals, ids, progress=step)
    coding = open_code(app.store, app.settings, unit_ids=ids) if app.settings.signals.open_coding.enabled else None
    summary = {"scanned": report.units, "up_to_date": report.up_to_date, "signals_new": report.signals,
               "retracted": report.retracted, "feedback_found": report.feedback, "feedback_attached": report.attached,
               "open_coding": coding.model_dump() if coding else None,
               "failed": len(app.store.failed_unit_ids()), "units": len(app.store.select_unit_ids())}
    if as_json:
        console.print_json(json.dumps(summary))
        return
    console.print(f"scanned {report.units} units ({report.up_to_date} up to date): {report.signals} new signals, "
                  f"{report.retracted} retracted, {report.feedback} feedback items found, {report.attached} pending "
                  f"feedback attached")
    if coding is not None:
        b = coding.budget
        usd = f"${b.usd:.4f} of ${b.daily_usd:g}" if b.daily_usd is not None else f"${b.usd:.4f} (no dollar limit)"
        console.print(f"open coding: {coding.coded} units coded ({coding.cached} from cache), {coding.notes} notes of "
                      f"what went wrong, {coding.errors} errors, {coding.left} left; today {b.calls} of "
                      f"{b.daily_calls} calls, {usd}" + (f"; stopped: {coding.stopped}" if coding.stopped else ""))
    console.print(f"{summary['failed']} of {summary['units']} units failed")
