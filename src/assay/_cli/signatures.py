"""``assay signatures`` and ``assay queue``: failure signatures by impact, incremental updates,
the rare-severe inbox, person flags, and review samples."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import AppContext, console, get_ctx, handle_errors, progress_bar
from assay._cli.score import ExecutorOpt, RayAddressOpt, executor_choice
from assay.exceptions import NotFoundError, UsageError
from assay.signatures import (
    EmbeddingStats,
    Signature,
    build_signatures,
    failed_unit_ids,
    flag_unit,
    lifecycle_history,
    list_signatures,
    map_points,
    new_units,
    sample_queue,
    scan_severe,
    severe_queue,
    update_lifecycle,
    update_signatures,
)
from assay.signatures.mix import mix_text
from assay.signatures.preview import is_stored_scope, preview_signatures
from assay.signatures.unseen import unseen_modes
from assay.signatures.workflows import WorkflowReport, workflow_report

signatures_app = typer.Typer(help="Failure signatures ranked by impact, the rare-severe inbox, and flags.",
                             no_args_is_help=False)


def _seen(first: datetime | None, last: datetime | None) -> str:
    days = [d.strftime("%Y-%m-%d") for d in (first, last) if d is not None]
    return " .. ".join(dict.fromkeys(days))


WIDE = 140
"""Console columns from which ``assay signatures`` shows every column (narrower: the essential ones)."""
_ESSENTIAL = ("id", "impact", "units", "lifecycle", "label", "signal mix")


def _table(signatures: list[Signature], with_key: bool, wide: bool = True) -> Table:
    """The signatures table; not ``wide`` (a narrow terminal, a CI log at 80 columns): the essential columns."""
    columns = ["id", "impact", "units", "share", "cost (mean)", "first .. last seen", "status", "lifecycle",
               "environments", "label", "signal mix", "representative unit", *(["structural key"] if with_key else [])]
    keep = [wide or c in _ESSENTIAL or c == "structural key" for c in columns]
    table = Table(*(c for c, k in zip(columns, keep, strict=True) if k), title="failure signatures by impact")
    for sig in signatures:
        units = f"{sig.size} (+{sig.assigned})" if sig.assigned else str(sig.size)
        u = sig.usage
        cost = "-" if u.cost_usd_sum is None else f"${u.cost_usd_sum:.4f} (${u.cost_usd_mean or 0:.4f})"
        cells = [str(sig.id), f"{sig.impact:.1f}", units, f"{sig.share:.1%}", cost,
                 _seen(sig.first_seen, sig.last_seen), sig.status, sig.lifecycle.replace("_", " "),
                 escape(", ".join(f"{e} {n}" for e, n in sig.environments.items())), escape(sig.label),
                 escape(mix_text(sig.signal_mix, limit=4)), escape(sig.representative_unit or ""),
                 *([escape(sig.structural_key)] if with_key else [])]
        table.add_row(*(c for c, k in zip(cells, keep, strict=True) if k))
    return table


def _preview(app: AppContext, env: str | None) -> list[Signature]:
    """Another environment's (or every environment's) signatures, clustered for this view only."""
    stats = EmbeddingStats()
    with progress_bar("embedding failed units", len(failed_unit_ids(app.store, env))) as advance:
        return preview_signatures(app.store, app.settings, env, progress=advance, stats=stats)


def _refresh(app: AppContext, rebuild: bool, quiet: bool, env: str | None = None) -> list[Signature]:
    """Build when asked or when nothing is built yet; else assign unseen failed units (of production)."""
    signatures = [] if rebuild else list_signatures(app.store, prices=app.settings.prices)
    stats = EmbeddingStats()
    if not signatures:
        with progress_bar("embedding failed units", len(failed_unit_ids(app.store, env))) as advance:
            signatures = build_signatures(app.store, app.settings, progress=advance, stats=stats, env=env)
    else:
        known = {p[0] for p in map_points(app.store)}
        unseen = [u for u in failed_unit_ids(app.store, env) if u not in known]
        if unseen:
            with progress_bar("embedding new failed units", len(unseen)) as advance:
                result = update_signatures(app.store, app.settings, progress=advance, stats=stats, env=env)
            signatures = list_signatures(app.store, prices=app.settings.prices)
            if not quiet:
                console.print(f"{len(result.assigned)} new units assigned to signatures, "
                              f"{len(result.new_signatures)} new signatures, {len(result.new_units)} units marked new")
    if not quiet and (stats.computed or stats.cached):
        console.print(f"embedded {stats.computed} units ({stats.cached} from cache)")
    changes = update_lifecycle(app.store, app.settings, env=env)
    if changes:
        signatures = list_signatures(app.store, prices=app.settings.prices)
    if not quiet:
        for change in changes:
            if change.from_state is not None:
                console.print(f"signature {change.signature_id}: {change.from_state} -> {change.to_state} "
                              f"({escape(change.reason)})")
    return signatures


def _list(ctx: typer.Context, rebuild: bool, as_json: bool, limit: int, with_key: bool = False,
          env: str | None = None) -> None:
    app = get_ctx(ctx)
    stored = is_stored_scope(app.store, env)
    signatures = _refresh(app, rebuild, quiet=as_json, env=env) if stored else _preview(app, env)
    if as_json:
        console.print_json(json.dumps([s.model_dump(mode="json") for s in signatures[:limit]]))
        return
    scope = app.store.env_scope(env)
    wide = console.width >= WIDE
    console.print(_table(signatures[:limit], with_key, wide))
    if not wide:
        console.print(f"({console.width} columns: share, cost, first/last seen, status, environments and the "
                      f"representative unit show from {WIDE} columns, e.g. COLUMNS={WIDE + 60}; --json has every "
                      "field)", highlight=False)
    if scope is None:
        console.print("environment: all (the failed units of every environment; --env NAME for one)", highlight=False)
    else:
        console.print(f"environment: {escape(scope.name)} (failed units of other environments are not clustered; "
                      "--env NAME or --env all to change)", highlight=False)
    if not stored:
        _preview_footer(app, signatures, env)
        return
    clustered = sum(s.size for s in signatures)
    total = len(map_points(app.store))
    pending = len(new_units(app.store))
    console.print(f"{len(signatures)} signatures cover {clustered} of {total} failed units; "
                  f"{total - clustered - pending} are noise (in no signature), {pending} are new (near no signature)")
    unseen = unseen_modes(app.store).text
    console.print(unseen[:1].upper() + unseen[1:] + " (`assay signatures unseen`)")
    inbox = len(severe_queue(app.store))
    if inbox:
        console.print(f"[bold red]{inbox} units flagged severe[/bold red]: see `assay signatures severe`")


def _preview_footer(app: AppContext, signatures: list[Signature], env: str | None) -> None:
    total = len(failed_unit_ids(app.store, env))
    console.print(f"{len(signatures)} signatures cover {sum(s.size for s in signatures)} of {total} failed units. "
                  "Clustered for this view only, not stored: the stored signatures are "
                  f"{escape(app.store.environments.production)}'s and stay as they are (an id marked new exists "
                  "in this view only)", highlight=False)


def _workflow_table(report: WorkflowReport, limit: int) -> Table:
    table = Table("workflow", "units", "failed", "95% interval", "vs overall", "most over-represented signal",
                  title=f"where failures concentrate: {report.units} units, {report.failed} failed "
                        f"({report.overall_rate:.1%} overall)")
    for w in report.workflows[:limit]:
        mark = {"higher": "⚑ higher", "lower": "lower", "same": ""}[w.failed.direction]
        top = w.top_kind
        table.add_row(escape(w.label), str(w.units), f"{w.failed.rate:.0%} ({w.failed.units})",
                      f"{w.failed.low:.0%}-{w.failed.high:.0%}", mark,
                      escape(f"{top.text} ({top.units} of {w.units})") if top else "")
    return table


def _by_workflow(app: AppContext, as_json: bool, limit: int, env: str | None = None) -> None:
    report = workflow_report(app.store, app.settings.signals, env)
    if as_json:
        console.print_json(report.model_dump_json())
        return
    console.print(_workflow_table(report, limit))
    flagged = len(report.flagged)
    console.print(f"{len(report.workflows)} workflows; {flagged} fail more often than overall (95% Wilson interval "
                  "above the overall rate, each on its own: about one comparison in twenty is flagged by chance)")
    if report.unscanned:
        console.print(f"{report.unscanned} units were never scanned: run `assay signals update`")


RebuildOpt = Annotated[bool, typer.Option("--rebuild", help="Cluster everything again (ids of signatures that "
                                                            "still exist are kept).",
                                          envvar="ASSAY_SIGNATURES_REBUILD")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]
LimitOpt = Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many signatures.",
                                       envvar="ASSAY_SIGNATURES_LIMIT")]
WorkflowOpt = Annotated[bool, typer.Option("--by-workflow", help="Every unit, failed or not, grouped by workflow "
                                           "(what the user asked for, the first tool that changes something): "
                                           "failure rate with its 95% interval against the overall rate.",
                                           envvar="ASSAY_SIGNATURES_BY_WORKFLOW")]
KeyOpt = Annotated[bool, typer.Option("--keys", help="Add the structural key column (tool, error, step, retrieval, "
                                                     "outcome).", envvar="ASSAY_SIGNATURES_KEYS")]
EnvOpt = Annotated[str | None, typer.Option(
    "--env", envvar="ASSAY_SIGNATURES_ENV", show_default=False,
    help="Cluster the failed units of this environment (default: \\[environments] production; 'all': every "
         "environment). Only production's signatures are stored: another environment is clustered for the view "
         "and never changes them.")]


@handle_errors
def signatures_cmd(ctx: typer.Context, rebuild: RebuildOpt = False, as_json: JsonOpt = False,
                   limit: LimitOpt = 20, with_key: KeyOpt = False, by_workflow: WorkflowOpt = False,
                   env: EnvOpt = None) -> None:
    """List failure signatures by impact (units x severity x recency), clustering first if needed.

    Failed units (outcome fail, or unknown with an error span) are keyed by failed tool,
    error type, workflow step, retrieval miss and outcome, embedded offline (cached: a re-run
    embeds only changed units) and clustered with HDBSCAN; units in no cluster are noise.
    Failed units added since are assigned to the nearest signature when close enough, else
    marked new. Re-clustering keeps the id of every signature that still exists. Only production
    units are clustered unless --env says otherwise; another environment is clustered for the
    view, never stored.
    """
    if by_workflow:
        _by_workflow(get_ctx(ctx), as_json, limit, env)
        return
    _list(ctx, rebuild, as_json, limit, with_key, env)


@signatures_app.callback(invoke_without_command=True)
@handle_errors
def signatures_main(ctx: typer.Context, rebuild: RebuildOpt = False, as_json: JsonOpt = False,
                    limit: LimitOpt = 20, with_key: KeyOpt = False, by_workflow: WorkflowOpt = False,
                    env: EnvOpt = None) -> None:
    """List failure signatures by impact (units x severity x recency), clustering first if needed.

    Failed units added since the last build are assigned to the nearest signature when close
    enough, else marked new; `--rebuild` clusters everything again, keeping the id of every
    signature that still exists. `--by-workflow` groups every unit, failed or not, by workflow instead.
    Only production units count unless --env says otherwise; another environment is clustered
    for the view, never stored, so production's signatures stay as they are.
    """
    if ctx.invoked_subcommand is None and by_workflow:
        _by_workflow(get_ctx(ctx), as_json, limit, env)
    elif ctx.invoked_subcommand is None:
        _list(ctx, rebuild, as_json, limit, with_key, env)


@signatures_app.command("update")
@handle_errors
def update_cmd(ctx: typer.Context, as_json: JsonOpt = False, executor: ExecutorOpt = None,
               ray_address: RayAddressOpt = None, env: EnvOpt = None) -> None:
    """Assign failed units added since the last build: nearest signature when close enough, else new.

    With --executor ray the new units' embeddings are computed in Ray tasks (batches of 256 texts),
    which write them to the store's embedding cache; clustering and assignment run here.
    """
    from assay.signatures.embeddings import remote_encoding

    app = get_ctx(ctx)
    if not is_stored_scope(app.store, env):
        raise UsageError(f"only {app.store.environments.production}'s signatures are stored and updated; "
                         f"`assay signatures --env {env}` shows that environment's clusters without storing them")
    kind, address = executor_choice(app, executor, ray_address)
    encoder = None
    if kind == "ray":
        from assay.suite.ray_executor import RayEncoder

        encoder = RayEncoder(address)
    stats = EmbeddingStats()
    with progress_bar("embedding new failed units", None) as advance, remote_encoding(encoder):
        result = update_signatures(app.store, app.settings, progress=advance, stats=stats, env=env)
    changes = update_lifecycle(app.store, app.settings, env=env)
    if as_json:
        console.print_json(result.model_dump_json())
        return
    ids = ", ".join(map(str, result.new_signatures)) or "none"
    console.print(f"{len(result.assigned)} units assigned, {len(result.new_signatures)} new signatures ({ids}), "
                  f"{len(result.new_units)} units marked new; embedded {stats.computed} ({stats.cached} from cache)")
    for change in changes:
        console.print(f"signature {change.signature_id}: {change.from_state or 'first seen'} -> {change.to_state} "
                      f"({escape(change.reason)})")


@signatures_app.command("history")
@handle_errors
def history_cmd(
    ctx: typer.Context,
    signature: Annotated[int | None, typer.Argument(help="Signature id (default: every signature).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """The lifecycle changes of the signatures, oldest first: new, escalating, criterion written,
    monitored (an active evaluator covers its criterion), resolved (that evaluator's production fail rate
    under [lifecycle] resolve_fail_rate), regressed (above it again). `assay signatures` and `assay
    signatures update` (and the worker) evaluate the lifecycle; this only reads what they recorded."""
    store = get_ctx(ctx).store
    changes = lifecycle_history(store, signature)
    if signature is not None and not changes:
        from assay._store.tables import SignatureRow

        with store.session() as s:
            if s.get(SignatureRow, signature) is None:
                raise NotFoundError("signature", str(signature), "see `assay signatures` for the ids")
    if as_json:
        console.print_json(json.dumps([c.model_dump(mode="json") for c in changes]))
        return
    table = Table("when (UTC)", "signature", "from", "to", "why", title="signature lifecycle")
    for c in changes:
        table.add_row(c.at.strftime("%Y-%m-%d %H:%M"), f"{c.signature_id} {escape(c.label[:60])}",
                      (c.from_state or "-").replace("_", " "), c.to_state.replace("_", " "), escape(c.reason))
    console.print(table)


@signatures_app.command("unseen")
@handle_errors
def unseen_cmd(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """When to stop reviewing: the chance that the next reviewed failure shows a failure mode no criterion
    covers yet, the Good-Turing estimate N1/N over the failures people labelled (N1: criteria exactly one
    of them fails; a failure labelled without a criterion is a mode of its own), with Esty's 95% interval.
    It leans high when reviewing across signatures (new modes come early) and knows nothing of failures
    no signal marks."""
    unseen = unseen_modes(get_ctx(ctx).store)
    if as_json:
        console.print_json(unseen.model_dump_json())
        return
    table = Table("criterion", "labelled failures", title="human fail labels per criterion")
    for name, count in unseen.per_criterion.items():
        table.add_row(escape(name), str(count))
    if unseen.uncovered:
        table.add_row("(no criterion: each a mode of its own)", str(unseen.uncovered))
    console.print(table)
    console.print(unseen.text[:1].upper() + unseen.text[1:])


@signatures_app.command("severe")
@handle_errors
def severe_cmd(
    ctx: typer.Context,
    include_reviewed: Annotated[bool, typer.Option("--all", help="Also list units reviewed since they were flagged.",
                                                   envvar="ASSAY_SEVERE_ALL")] = False,
    as_json: JsonOpt = False,
) -> None:
    """The rare-severe inbox: units flagged by an `[severe]` rule, low user feedback or a person,
    whatever the size of their signature. Checks units not checked yet against the rules first."""
    app = get_ctx(ctx)
    scan_severe(app.store, app.settings.severe)
    items = severe_queue(app.store, include_reviewed=include_reviewed)
    if as_json:
        console.print_json(json.dumps([i.model_dump(mode="json") for i in items]))
        return
    table = Table("unit", "flagged by", "reasons", "signature", "reviewed", title="rare-severe inbox")
    for item in items:
        sources = sorted({f.flagged_by or f.source for f in item.flags})
        signature = f"{item.signature_id} ({item.signature_size} units)" if item.signature_id else "none"
        table.add_row(escape(item.unit_id), escape(", ".join(sources)), escape("; ".join(f.reason for f in item.flags)),
                      signature, "yes" if item.reviewed else "")
    console.print(table)
    console.print(f"{len(items)} units flagged severe")


@signatures_app.command("flag")
@handle_errors
def flag_cmd(
    ctx: typer.Context,
    unit: Annotated[str, typer.Argument(help="Unit id to flag severe.")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why it is severe (required).",
                                        envvar="ASSAY_FLAG_REASON")],
    by: Annotated[str, typer.Option("--by", help="Who flags it.", envvar="ASSAY_FLAG_BY")] = "",
) -> None:
    """Flag a unit severe by hand: it joins the rare-severe inbox whatever its signature."""
    flag = flag_unit(get_ctx(ctx).store, unit, reason, flagged_by=by)
    console.print(f"flagged {escape(unit)} severe: {escape(flag.reason)}")


@handle_errors
def queue_cmd(
    ctx: typer.Context,
    signature: Annotated[int | None, typer.Argument(help="Signature id (see `assay signatures`).")] = None,
    for_calibration: Annotated[str | None, typer.Option(
        "--for-calibration", help="Instead of a signature's sample: the unlabelled units whose labels would help "
        "certify this evaluator most (the class in short supply, units the judge is least sure of, units "
        "evaluators disagree on).", envvar="ASSAY_QUEUE_FOR_CALIBRATION")] = None,
    size: Annotated[int, typer.Option("--size", "-n", min=1, help="Number of units to review.",
                                      envvar="ASSAY_QUEUE_SIZE")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the unit ids as JSON.")] = False,
) -> None:
    """Print a review queue for one signature: units nearest its centroid, then spread across it.
    With --for-calibration NAME: the units to label next so NAME gets certified sooner.

    The sample is deterministic: the same signature and size give the same units.
    """
    if (signature is None) == (for_calibration is None):
        raise UsageError("give a signature id or --for-calibration NAME (one of them)")
    app = get_ctx(ctx)
    if for_calibration is not None:
        _calibration_queue(app, for_calibration, size, as_json)
        return
    assert signature is not None
    unit_ids = sample_queue(app.store, signature, size)
    if as_json:
        console.print_json(json.dumps({"signature": signature, "unit_ids": unit_ids}))
        return
    table = Table("#", "unit", title=f"review queue: signature {signature}")
    for n, unit_id in enumerate(unit_ids, 1):
        table.add_row(str(n), escape(unit_id))
    console.print(table)


def _calibration_queue(app: AppContext, name: str, size: int, as_json: bool) -> None:
    from assay._cli.evaluate import find_evaluator
    from assay.calibration.labelling import calibration_queue
    from assay.evaluators import load_evaluators

    defn = find_evaluator(app, name)
    folder = app.settings.evaluators_path()
    peers = [d.name for d in load_evaluators(folder) if d.criterion.name == defn.criterion.name]
    queue = calibration_queue(app.store, defn, size, peers)
    if as_json:
        console.print_json(json.dumps({**queue.model_dump(mode="json"),
                                       "unit_ids": [i.unit_id for i in queue.items]}))
        return
    short = queue.short_class or "neither"
    table = Table("#", "unit", "verdict", "priority", "why",
                  title=f"label next for {escape(name)} ({escape(queue.criterion)}): short of {short}; labels "
                        + ", ".join(f"{k} {v}" for k, v in sorted(queue.balance.items())))
    for n, item in enumerate(queue.items, 1):
        table.add_row(str(n), escape(item.unit_id), item.verdict or "-", f"{item.priority:.2f}",
                      escape("; ".join(item.reasons) or "-"))
    console.print(table)
    for note in queue.notes:
        console.print(f"[yellow]note[/yellow]: {escape(note)}")
