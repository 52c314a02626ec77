"""``assay drift``: production score drift, judge-human agreement over time, new failure signatures."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import console, get_ctx, handle_errors
from assay.calibration.estimates import RateEstimate
from assay.suite.drift import DriftReport, EvaluatorDrift, check_drift


class WindowChoice(StrEnum):
    day = "day"
    week = "week"


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _estimate(e: RateEstimate) -> str:
    if e.value is None:
        return f"[dim]undefined: {escape(e.note)}[/dim]"
    return f"{_pct(e.value)} [{_pct(e.low)}, {_pct(e.high)}]".replace("[", r"\[") + ("*" if e.note else "")


def caveats(ev: EvaluatorDrift) -> list[str]:
    """Every caveat of one evaluator's drift report that the JSON carries, in words: window notes (not
    tested, evaluator version changed), agreement below the threshold or from labels that are not an audit
    sample, and the notes of the pass-rate estimates."""
    out = [f"window {w.start}: {w.note}" for w in ev.windows if w.note]
    out += [f"window {a.start}: judge-human agreement {_pct(a.agreement)} on {a.n_pairs} labels is below the "
            f"threshold {ev.threshold}" for a in ev.agreement if a.below_threshold]
    if ev.agreement and ev.audit_source == "all_labels":
        out.append("agreement is measured on every human label of a scored unit, not a random audit sample")
    if ev.estimates is not None:
        out += [f"{name} ({ev.estimates_window}): {e.note}" for name, e in (
            ("raw pass rate", ev.estimates.raw), ("Rogan-Gladen", ev.estimates.rogan_gladen),
            ("PPI", ev.estimates.ppi)) if e.note and e.value is not None]
    return out


def _evaluator_table(ev: EvaluatorDrift) -> Table:
    table = Table("window", "scored", "unscored", "pass rate", "change", "p (pass rate)", "mean score",
                  "p (scores)", title=f"{escape(ev.evaluator)}", title_justify="left")
    for w in ev.windows:
        pc, sc = w.pass_rate_change, w.score_change
        table.add_row(str(w.start), str(w.n_scored), str(w.n_unscored), _pct(w.pass_rate),
                      "-" if pc is None else f"{100 * pc.delta:+.1f} pts",
                      "-" if pc is None else f"{'[red]' if pc.significant else ''}{pc.p_value:.3g}",
                      "-" if w.score_mean is None else f"{w.score_mean:.3f}",
                      "-" if sc is None else f"{'[red]' if sc.significant else ''}{sc.p_value:.3g}")
    return table


def _print_report(report: DriftReport) -> None:
    console.print(f"drift per {report.window} since {report.since:%Y-%m-%d} (alpha {report.alpha}), environment "
                  f"{escape(report.environment)}, run kinds {escape(', '.join(report.run_kinds))}")
    if not report.evaluators:
        console.print("no production scores in this period")
    for ev in report.evaluators:
        console.print(_evaluator_table(ev))
        if ev.agreement:
            last = ev.agreement[-1]
            console.print(f"  judge-human agreement, latest {report.window} ({last.start}): {_pct(last.agreement)} "
                          f"on {last.n_pairs} labels; threshold {ev.threshold}")
        if ev.estimates is not None:
            e = ev.estimates
            console.print(f"  pass rate {ev.estimates_window}: raw {_estimate(e.raw)}; Rogan-Gladen "
                          f"{_estimate(e.rogan_gladen)}; PPI {_estimate(e.ppi)}")
        for caveat in caveats(ev):
            console.print(f"  [yellow]caveat[/yellow]: {escape(caveat)}", soft_wrap=True)
    for sig in report.new_signatures:
        console.print(f"new signature {sig.id}: {escape(sig.label)} ({sig.size} units, "
                      f"created {sig.created_at:%Y-%m-%d})")
    for alert in report.alerts:
        console.print(f"[red]ALERT[/red] {alert.kind}: {escape(alert.message)}")
    if not report.alerts:
        console.print("no drift alert")


@handle_errors
def drift_cmd(
    ctx: typer.Context,
    window: Annotated[WindowChoice, typer.Option("--window", envvar="ASSAY_DRIFT_WINDOW",
                                                 help="Window length: a UTC day, or an ISO week (from Monday).")]
    = WindowChoice.week,
    periods: Annotated[int | None, typer.Option("--periods", min=1, envvar="ASSAY_DRIFT_PERIODS",
                                                help="Windows to look back over (default 30 days or 12 weeks).")]
    = None,
    env: Annotated[str | None, typer.Option("--env", envvar="ASSAY_DRIFT_ENV", show_default=False, help=(
        "Read the scores of this environment's units (default: \\[environments] production; 'all': every "
        "unit)."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the drift report as JSON on stdout.")] = False,
) -> None:
    """Check production scores for drift, and alert.

    Per evaluator: pass rate and score distribution per window, each tested against the
    previous window (two-proportion test; Mann-Whitney U on scores); judge-human agreement
    on audit labels against the evaluator's threshold; the raw pass rate next to judge-error
    corrected estimates (Rogan-Gladen, prediction-powered inference); and failure signatures
    created in the last window. Alerts on the latest window are logged and POSTed to the
    webhook_url of the drift settings (assay.toml, or ASSAY_DRIFT__WEBHOOK_URL) when set.

    Exit codes: 0 no alert; 1 at least one alert fired; 2 usage or configuration error; 3 a failure.
    """
    app = get_ctx(ctx)
    report = check_drift(app.store, app.settings.drift, "day" if window == WindowChoice.day else "week", periods,
                         env=env)
    if as_json:
        typer.echo(json.dumps({**report.model_dump(mode="json"), "exit_code": report.exit_code}, indent=2))
    else:
        _print_report(report)
    raise typer.Exit(report.exit_code)
