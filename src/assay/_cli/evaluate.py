"""``assay evaluators``, ``assay calibrate`` and ``assay gate``."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

import typer
from rich import box
from rich.markup import escape
from rich.table import Column, Table

from assay._cli._common import (
    AllowJudgeChangeOpt,
    AppContext,
    RefreshOpt,
    console,
    err_console,
    get_ctx,
    handle_errors,
    progress_bar,
)
from assay._cli.score import ExecutorOpt, RayAddressOpt, executor_choice
from assay.calibration import CalibrationReport, Estimate, calibrate
from assay.calibration.certify import CalibrationPlan, Certification
from assay.calibration.scales import ScaleMetrics, ScaleReport
from assay.evaluators import EvaluatorDef, content_version, evaluator_json_schema, load_evaluator, load_evaluators
from assay.exceptions import NotFoundError, UsageError
from assay.models import JudgeClient, make_judge
from assay.suite import GateReport, UnitSelection, run_gate

evaluators_app = typer.Typer(help="Evaluators: one YAML file each in evaluators/.", no_args_is_help=True)


def find_evaluator(app: AppContext, name: str) -> EvaluatorDef:
    """The evaluator named ``name`` in the workspace's evaluators folder, else the one in its file
    ``NAME.yaml`` / ``NAME.yml`` (a loop over the folder's files finds an evaluator whose file is named
    otherwise).

    Raises:
        NotFoundError: no such evaluator (the message lists the folder's evaluators).
    """
    folder = app.settings.evaluators_path()
    defs = load_evaluators(folder) if folder.exists() else []
    for defn in defs:
        if defn.name == name:
            return defn
    for suffix in (".yaml", ".yml"):
        if (folder / f"{name}{suffix}").is_file():
            return load_evaluator(folder / f"{name}{suffix}")
    raise NotFoundError("evaluator", name, f"evaluators in {folder}: {', '.join(d.name for d in defs) or 'none'}")


def judge_for(app: AppContext, defn: EvaluatorDef | None = None, refresh: bool = False) -> JudgeClient | None:
    """The judge client an evaluator needs (None for kinds without one), with the evaluator file's model
    override, through the store's judge cache (``refresh``: asked again, replies replaced)."""
    from assay.evaluators.runner import judge_settings_for

    if defn is not None and not defn.uses_judge:
        return None
    settings = judge_settings_for(defn, app.settings.judge) if defn is not None else app.settings.judge
    return make_judge(settings, app.store, refresh=refresh)


@evaluators_app.command("list")
@handle_errors
def evaluators_list(ctx: typer.Context,
                    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List evaluators with version, criterion and calibration status."""
    from assay.calibration.calibrate import evaluator_record

    app = get_ctx(ctx)
    folder = app.settings.evaluators_path()
    rows: list[dict[str, Any]] = []
    for defn in load_evaluators(folder) if folder.exists() else []:
        rec = evaluator_record(app.store, defn)
        cal = rec.calibration if rec else None
        acc = None if cal is None else cal.test.agreement.value if cal.test is not None else cal.agreement.accuracy
        rows.append({"name": defn.name, "version": content_version(defn), "kind": defn.kind,
                     "criterion": defn.criterion.name, "status": rec.status if rec else "uncalibrated",
                     "agreement": acc, "threshold": defn.threshold})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    # no vertical rules, no edge, one space of padding: the seven columns fit 80 terminal columns; names whole
    width = max((len(r["name"]) for r in rows), default=4)
    table = Table(Column("name", no_wrap=True, min_width=min(width, 40)),
                  Column("version", no_wrap=True, min_width=12), "kind", "criterion", "status", "agreement",
                  "threshold", box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))
    for r in rows:
        table.add_row(r["name"], r["version"], r["kind"], r["criterion"], r["status"],
                      "-" if r["agreement"] is None else f"{r['agreement']:.3f}", f"{r['threshold']:.2f}")
    console.print(table)


@evaluators_app.command("show")
@handle_errors
def evaluators_show(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Evaluator name.")]) -> None:
    """Show an evaluator's definition and version."""
    import yaml

    defn = find_evaluator(get_ctx(ctx), name)
    console.print(f"# version {content_version(defn)}")
    console.print(yaml.safe_dump(defn.model_dump(mode="json"), sort_keys=False, allow_unicode=True))


@evaluators_app.command("schema")
@handle_errors
def evaluators_schema() -> None:
    """Print the JSON Schema of evaluator YAML files (also shipped as assay/evaluators/evaluator.schema.json)."""
    console.print_json(json.dumps(evaluator_json_schema()))


@evaluators_app.command("diff")
@handle_errors
def evaluators_diff(ctx: typer.Context, name: Annotated[str, typer.Argument(help="Evaluator name.")],
                    v1: Annotated[str, typer.Argument(help="Older version (a unique prefix will do).")],
                    v2: Annotated[str, typer.Argument(help="Newer version (a unique prefix will do).")]) -> None:
    """Show a readable diff of two versions of an evaluator: prompt, labels and parameters.

    Versions are the stored ones (each calibrated version is kept) and the current file's.
    """
    app = get_ctx(ctx)
    known = evaluator_versions(app, name)
    old, new = _pick_version(known, name, v1), _pick_version(known, name, v2)
    lines = difflib.unified_diff(_readable(known[old]).splitlines(), _readable(known[new]).splitlines(),
                                 fromfile=f"{name}@{old}", tofile=f"{name}@{new}", lineterm="")
    text = "\n".join(lines)
    console.print(text or f"{name}: versions {old} and {new} are identical", markup=False, highlight=False)


@evaluators_app.command("draft")
@handle_errors
def evaluators_draft(
    ctx: typer.Context,
    criterion: Annotated[str, typer.Option(help="Criterion name or id.", envvar="ASSAY_DRAFT_CRITERION")],
    shots: Annotated[int, typer.Option(help="Few-shot examples per label, from the train split.")] = 1,
    overwrite: Annotated[bool, typer.Option(help="Replace existing files of the same name.")] = False,
    rubric: Annotated[str, typer.Option(
        help="Who words the rubric in the judge prompt: 'judge' asks the configured judge model to rewrite the "
             "criterion as pass/fail decision rules (its reply is checked; a refused reply falls back to the "
             "criterion text), 'template' keeps the criterion text as written, 'auto' asks the judge when the "
             "workspace configures an API judge (openai, anthropic) and not the small local default.",
        envvar="ASSAY_DRAFT_RUBRIC")] = "auto",
) -> None:
    """Write draft evaluators for a criterion: an llm_judge (few-shot from the train split only) and
    code checks for the checkable facts the criterion names (a tool that must or must not be called,
    a quoted phrase). Drafts are not active: calibrate them first. The judge file's description says
    which rubric wording was used (judge or template) and why."""
    from assay.calibration.draft import draft_evaluators
    from assay.evaluators import save_evaluator

    app = get_ctx(ctx)
    if rubric not in ("auto", "judge", "template"):
        raise UsageError(f"--rubric takes auto, judge or template; got {rubric!r}")
    ask = rubric == "judge" or (rubric == "auto" and app.settings.judge.provider != "local")
    draft = draft_evaluators(app.store, criterion, shots_per_label=shots, judge=judge_for(app) if ask else None)
    folder = app.settings.evaluators_path()
    for defn in (draft.judge, *draft.checks):
        path = folder / f"{defn.name}.yaml"
        if path.exists() and not overwrite:
            console.print(f"[yellow]kept[/yellow] {path} (exists; --overwrite replaces it)")
            continue
        save_evaluator(defn, path)
        console.print(f"wrote {path}  ({defn.kind}, version {content_version(defn)})")
    console.print(f"few-shot examples from {draft.split.split_id} train: {', '.join(draft.examples) or 'none'}")
    console.print(draft.rubric.note, markup=False, highlight=False)


def evaluator_versions(app: AppContext, name: str) -> dict[str, EvaluatorDef]:
    """Every known version of an evaluator: stored records and the current file, by content version.

    Raises:
        NotFoundError: no version of that evaluator is known.
    """
    from sqlalchemy import select

    from assay._store.tables import EvaluatorRow

    found: dict[str, EvaluatorDef] = {}
    with app.store.session() as s:
        for row in s.scalars(select(EvaluatorRow).where(EvaluatorRow.name == name).order_by(EvaluatorRow.created_at)):
            found[row.version] = EvaluatorDef.model_validate(row.definition)
    try:
        current = find_evaluator(app, name)
        found[content_version(current)] = current
    except NotFoundError:
        if not found:
            raise
    return found


def _pick_version(known: dict[str, EvaluatorDef], name: str, prefix: str) -> str:
    matches = [v for v in known if v.startswith(prefix)]
    if len(matches) != 1:
        raise UsageError(f"{name}: version {prefix!r} matches {len(matches)} of the known versions "
                         f"({', '.join(known) or 'none'})")
    return matches[0]


def _readable(defn: EvaluatorDef) -> str:
    """YAML of a definition with the prompt spelled out, for diffs."""
    from assay.evaluators.definition import readable_yaml

    return readable_yaml(defn)


def print_calibration(r: CalibrationReport) -> None:
    """Print the agreement table of one calibration."""
    a = r.agreement
    c = a.confusion

    def f(x: float | None) -> str:
        return "undefined" if x is None else f"{x:.3f}"

    table = Table("metric", "value", title=f"calibration: {r.evaluator} @ {r.evaluator_version}")
    for k, v in [*_test_rows(r), ("judge model", r.judge_model or "(code)"),
                 ("ground-truth dataset", f"v{r.dataset_version} {r.dataset_balance}"), ("n scored", str(a.n)),
                 ("unscored / errors / not applicable", f"{r.n_unscored} / {r.n_errors} / {r.n_not_applicable}"),
                 ("all items: agreement (accuracy)", f(a.accuracy)), ("all items: Cohen's kappa", f(a.kappa)),
                 ("all items: TPR (pass recall)", f(a.tpr)), ("all items: TNR (fail recall)", f(a.tnr)),
                 ("confusion: human pass -> judge pass / fail", f"{c.tp} / {c.fn}"),
                 ("confusion: human fail -> judge pass / fail", f"{c.fp} / {c.tn}")]:
        table.add_row(k, v)
    console.print(table)
    if r.scale_metrics is not None:
        print_scale_metrics(r.scale_metrics)
    if r.threshold_choice is not None:
        t = r.threshold_choice
        console.print(f"pass_score chosen on train + dev ({t.n_fit} items, {t.objective} {t.fit_value:.3f}): "
                      f"{t.threshold:.4g} (now {t.current_pass_score:g}); on test at it: agreement "
                      f"{_ci(t.test.agreement)}, kappa {_ci(t.test.kappa)}, TPR {_ci(t.test.tpr)}, "
                      f"TNR {_ci(t.test.tnr)}. Set pass_score in the evaluator file to use it (a new version, "
                      "calibrated again).")
    for w in r.warnings:
        console.print(f"[yellow]warning[/yellow]: {w}")
    cert = r.certification
    if r.meets_threshold and cert is not None and cert.policy == "lower_bound":
        lows = ", ".join(f"{b.name} {b.low:.3f}" for b in cert.bounds if b.low is not None)
        console.print(f"{r.evaluator}: [green]certified[/green]: the {_interval(cert)} lower bounds ({lows}) reach "
                      f"the threshold {r.threshold:.2f} -> status [bold]{r.status}[/bold]")
    elif r.meets_threshold:
        acc = r.test.agreement.value if r.test else a.accuracy
        kappa = r.test.kappa.value if r.test else a.kappa
        console.print(f"{r.evaluator}: test agreement {f(acc)} [green]meets[/green] the threshold "
                      f"{r.threshold:.2f} (kappa {f(kappa)}; policy point, weaker than lower_bound) -> status "
                      f"[bold]{r.status}[/bold]")
    else:
        console.print(f"{r.evaluator}: [red]does NOT meet[/red] its threshold: " + escape("; ".join(r.notes))
                      + f" -> status [bold]{r.status}[/bold]")
    if r.override_reason:
        console.print(f"[yellow]activated by override[/yellow], reason recorded: {r.override_reason}")
    if r.plan is not None:
        print_plan(r.plan, r.evaluator, brief=True)


def _interval(cert: Certification | CalibrationPlan) -> str:
    return f"{cert.confidence:.0%} {'Wilson' if cert.interval == 'wilson' else 'Clopper-Pearson'}"


def print_plan(plan: CalibrationPlan, name: str, brief: bool = False) -> None:
    """The labels each class still needs for the bounds to clear (``brief``: one line per class)."""
    if brief:
        parts = [f"{r.of}: " + ("none" if r.more == 0 else "out of reach" if r.more is None else
                                f"{r.more} more" + (" (first step)" if r.provisional else "")) for r in plan.rates]
        console.print("to certify: " + "; ".join(parts) + f"  (assay calibrate {escape(name)} --plan explains)")
        return
    table = Table("rate", "class", "rate now", "planned at", "labelled", "test now", "test needed", "labels needed",
                  "more", title=f"plan: labels for the {_interval(plan)} lower bounds of {escape(name)} to reach "
                                f"{plan.threshold:.2f}")
    for r in plan.rates:
        table.add_row(r.name, r.of, "-" if r.rate is None else f"{r.rate:.3f}",
                      "-" if r.planned_rate is None else f"{r.planned_rate:.3f}", str(r.labelled), str(r.test_now),
                      "-" if r.test_needed is None else str(r.test_needed),
                      "-" if r.labels_needed is None else str(r.labels_needed),
                      "out of reach" if r.more is None else str(r.more) + (" (first step)" if r.provisional else ""))
    console.print(table)
    console.print(f"Planned so that every bound clears with about {plan.power:.0%} chance, each rate taken at the "
                  f"value it beats with 70% probability given the labels so far; "
                  f"{plan.test_fraction:.0%} of each class's labels go to the test split.")
    for r in plan.rates:
        if r.note:
            console.print(f"  {r.name} ({r.of}): {escape(r.note)}")


def print_scale_metrics(s: ScaleReport) -> None:
    """Print agreement on a non-binary scale: test, all items and the human ceiling side by side; position bias."""
    cols = [("test", s.test), ("all items", s.overall)]
    if s.human_ceiling is not None:
        cols.append((f"human-human (test, {s.human_ceiling.n_pairs} pairs)", s.human_ceiling.metrics))
    table = Table("metric", *(name for name, _ in cols), title=f"on the {s.kind} scale")
    table.add_row("n", *(str(m.n) for _, m in cols))
    for label, pick in _SCALE_ROWS[s.kind]:
        table.add_row(label, *(_ci(pick(m)) for _, m in cols))
    console.print(table)
    _print_confusion(s.test)
    if s.human_ceiling is None:
        console.print("human-human ceiling: no test item has labels from two humans")
    for where, bias in (("test", s.position_bias), ("all items", s.position_bias_overall)):
        if bias is not None:
            console.print(f"position bias ({where}): the verdict flips in {bias.flips} of {bias.n_scored} pairs asked "
                          f"in both orders, {_ci(bias.flip_rate)}; of the flips, {bias.first_shown} favour the "
                          f"output shown first and {bias.second_shown} the one shown second")
    console.print(s.decision, markup=False, highlight=False)


def _print_confusion(m: ScaleMetrics) -> None:
    """The test confusion matrix (rows human, columns judge) and, categorical, each class's precision and recall."""
    names = list(m.human)
    block = _block(m)
    confusion = getattr(block, "confusion", None)
    if confusion is not None:
        table = Table("human / judge", *names, title="test confusion")
        for name, row in zip(names, confusion, strict=True):
            table.add_row(name, *(str(x) for x in row))
        console.print(table)
    if m.categorical is not None:
        table = Table("class", "human", "judge", "precision", "recall", "F1", title="test, per class")
        for c in m.categorical.per_class:
            table.add_row(escape(c.name), str(c.human), str(c.judge),
                          *("-" if x is None else f"{x:.3f}" for x in (c.precision, c.recall, c.f1)))
        console.print(table)
    if m.pairwise is not None:
        console.print(f"ties on test: humans {m.pairwise.human_ties}, judge {m.pairwise.judge_ties}")


def _block(m: ScaleMetrics) -> Any:
    return m.ordinal or m.categorical or m.pairwise


_SCALE_ROWS: dict[str, list[tuple[str, Any]]] = {
    "ordinal": [("Spearman's rho", lambda m: _block(m).spearman), ("Kendall's tau-b", lambda m: _block(m).kendall),
                ("mean absolute error (levels)", lambda m: _block(m).mae),
                ("weighted kappa (quadratic)", lambda m: _block(m).weighted_kappa),
                ("exact agreement", lambda m: _block(m).exact), ("within one level", lambda m: _block(m).within_one)],
    "categorical": [("accuracy", lambda m: _block(m).accuracy), ("Cohen's kappa", lambda m: _block(m).kappa),
                    ("macro-F1", lambda m: _block(m).macro_f1)],
    "pairwise": [("agreement (a tie agrees with a tie)", lambda m: _block(m).agreement),
                 ("agreement where both chose a side", lambda m: _block(m).agreement_without_ties),
                 ("Cohen's kappa", lambda m: _block(m).kappa)],
}


def _ci(e: Estimate) -> str:
    if e.value is None:
        return "undefined"
    return f"{e.value:.3f}" + ("" if e.low is None else f"  [{e.low:.3f}, {e.high:.3f}]")


def _test_rows(r: CalibrationReport) -> list[tuple[str, str]]:
    """Table rows of the test-split metrics (95% bootstrap CIs) and the human ceiling."""
    if r.test is None:
        return []
    t, c = r.test, r.test.confusion
    rows = [("split (train / dev / test)", " / ".join(str(r.split_sizes.get(s, 0)) for s in ("train", "dev", "test"))
             + f"  ({r.split_id}; test reported {r.test_uses}x)"),
            ("test: n scored (human pass / fail)", f"{t.n} ({t.human_pass} / {t.human_fail})"),
            ("test: agreement [95% CI]", _ci(t.agreement)), ("test: Cohen's kappa", _ci(t.kappa)),
            ("test: TPR", _ci(t.tpr)), ("test: TNR", _ci(t.tnr)), ("test: balanced accuracy", _ci(t.balanced_accuracy)),
            ("test: precision on fail", _ci(t.precision_fail)), ("test: recall on fail", _ci(t.recall_fail)),
            ("test confusion: human pass -> judge pass / fail", f"{c.tp} / {c.fn}"),
            ("test confusion: human fail -> judge pass / fail", f"{c.fp} / {c.tn}")]
    h = r.human_ceiling
    rows.append(("human-human ceiling (test items)", "no item has 2+ human labels" if h is None else
                 f"agreement {_ci(h.metrics.agreement)}, kappa {_ci(h.metrics.kappa)} on {h.n_items} items"))
    cert = r.certification
    if cert is not None:
        rows += [(f"test: {b.name} {_interval(cert)} lower bound", "undefined" if b.low is None else
                  f"{b.low:.3f} ({b.k}/{b.n}) {'>=' if b.clears else '<'} {b.threshold:.2f}") for b in cert.bounds]
    return rows


@handle_errors
def calibrate_cmd(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Evaluator name.")],
    force: Annotated[str | None, typer.Option(help="Activate even below threshold; the reason is recorded.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    split: Annotated[str, typer.Option(help="train,dev,test shares of the labelled units (stratified).",
                                       envvar="ASSAY_CALIBRATE_SPLIT")] = "0.5,0.2,0.3",
    seed: Annotated[int, typer.Option(help="Seed of the split and the bootstrap.", envvar="ASSAY_CALIBRATE_SEED")] = 0,
    tune: Annotated[bool, typer.Option("--tune", help="Search few-shot examples and prompt variants on dev, "
                                       "report the winner once on test, write it to the evaluator's file.",
                                       envvar="ASSAY_CALIBRATE_TUNE")] = False,
    variants: Annotated[str, typer.Option(
        help="With --tune: comma-separated instruction variants of the prompt to try besides the prompt as "
             "written (verdict-first, strict, lenient, restated); 'none' tries the prompt as written only.",
        envvar="ASSAY_CALIBRATE_VARIANTS")] = "verdict-first,strict,lenient,restated",
    plan: Annotated[bool, typer.Option(
        "--plan", help="Print how many more labels of each class the lower bounds need to clear the threshold, "
        "from this version's stored calibration and the labels there are now (no judge call; the test split is "
        "not looked at again).", envvar="ASSAY_CALIBRATE_PLAN")] = False,
    refresh: RefreshOpt = False,
) -> None:
    """Run an evaluator on the labelled units of its criterion and measure agreement with the labels.

    Prints n, agreement, Cohen's kappa, TPR, TNR, balanced accuracy, precision/recall on fail
    and the confusion matrix, with bootstrap 95% CIs on the held-out test split. The evaluator
    becomes active only when it is certified: by default (\\[calibration] policy = "lower_bound")
    when the 95% Wilson lower bounds of TPR and TNR on the test split both reach its threshold
    (default 0.80); policy "point" is the older, weaker rule (test agreement at the threshold and
    kappa above min_kappa). --plan says how many more labels of each class that takes.

    Every run re-decides the status: a version activated earlier with --force goes back to
    draft when it is calibrated again without --force and still misses its threshold; a loud
    warning on stderr says the override is revoked. The old and new status are printed whenever
    they differ. Exit 0 whether the evaluator ends active or draft (`assay gate` then reports a
    missing active evaluator), exit 2 on a usage or configuration error, exit 3 when it scored no
    labelled unit (each one an error: status unchanged, the test split not counted as used) or the
    judge is unreachable.
    """
    from assay.calibration.calibrate import evaluator_record

    app = get_ctx(ctx)
    defn = find_evaluator(app, name)
    before = evaluator_record(app.store, defn)
    if plan:
        _plan(app, defn, before, as_json)
        return
    prev_status, prev_override = (before.status, before.override_reason) if before else (None, None)
    if tune:
        names = () if variants.strip() == "none" else tuple(v.strip() for v in variants.split(",") if v.strip())
        _tune(app, defn, parse_fractions(split), seed, as_json, names)
        return
    from assay.calibration import build_dataset

    ds = build_dataset(app.store, defn.criterion.name)
    calls = len(ds.items) * (2 if defn.scale.kind == "pairwise" else 1)  # pairs are asked in both orders
    with progress_bar(f"calibrating {name}", calls) as advance:
        report = calibrate(app.store, defn, judge_for(app, defn, refresh), app.settings.judge, advance, dataset=ds,
                           force_reason=force, min_kappa=app.settings.min_kappa, fractions=parse_fractions(split),
                           seed=seed, certification=app.settings.calibration)
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        print_calibration(report)
    _warn_status_change(name, prev_status, prev_override, report.status)


def _plan(app: AppContext, defn: EvaluatorDef, record: Any, as_json: bool) -> None:
    """``assay calibrate NAME --plan``: the plan of this version's stored calibration, with today's labels."""
    from assay.calibration import build_dataset
    from assay.calibration.calibrate import pass_fail_balance, report_plan

    report = record.calibration if record is not None else None
    if report is None:
        raise UsageError(f"{defn.name}@{content_version(defn)} has no stored calibration: run "
                         f"`assay calibrate {defn.name}` first (its report plans too)")
    labelled = pass_fail_balance(defn, build_dataset(app.store, defn.criterion.name))
    plan = report_plan(report, app.settings.calibration, labelled)
    if as_json:
        console.print_json(plan.model_dump_json())
        return
    print_plan(plan, defn.name)


def _warn_status_change(name: str, before: str | None, override: str | None, after: str) -> None:
    """On stderr: the status change of this evaluator version, and a revoked --force override."""
    if before is None or before == after:
        return
    err_console.print(f"[yellow]{escape(name)}: status {before} -> {after}[/yellow]")
    if override and after != "active":
        err_console.print(f"[bold red]warning:[/bold red] the earlier override of {escape(name)} "
                          f"(--force {escape(override)!r}) is revoked: it misses its threshold and is now "
                          f"{after}, so `assay gate` will not run it. Pass --force REASON again to keep it active.")


def parse_fractions(text: str) -> tuple[float, float, float]:
    """``"0.5,0.2,0.3"`` -> (0.5, 0.2, 0.3).

    Raises:
        UsageError: not three comma-separated numbers.
    """
    try:
        a, b, c = (float(x) for x in text.split(","))
    except ValueError as exc:
        raise UsageError(f"--split takes three comma-separated shares train,dev,test; got {text!r}") from exc
    return a, b, c


def _tune(app: AppContext, defn: EvaluatorDef, fractions: tuple[float, float, float], seed: int,
          as_json: bool, variants: tuple[str, ...]) -> None:
    """``assay calibrate NAME --tune``: search on dev, calibrate the winner on test, write its file."""
    from assay.calibration.tune import tune
    from assay.evaluators import load_evaluator, save_evaluator

    with progress_bar(f"tuning {defn.name}", None) as advance:
        best, report = tune(app.store, defn, judge_for(app, defn), app.settings.judge, fractions=fractions, seed=seed,
                            progress=advance, instructions=variants, certification=app.settings.calibration)
    folder = app.settings.evaluators_path()
    path = next(p for p in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
                if load_evaluator(p).name == defn.name)
    save_evaluator(best, path)
    if as_json:
        console.print_json(report.model_dump_json())
        return
    table = Table("version", "prompt variant", "shots/label", "example seed", "dev n", "dev agreement", "dev kappa",
                  title=f"tuning {defn.name} on dev")
    for c in report.candidates:
        mark = " (winner)" if c.version == report.winner.version else ""
        table.add_row(c.version + mark, c.variant, str(c.shots_per_label), str(c.example_seed), str(c.dev.n),
                      _ci(c.dev.agreement), _ci(c.dev.kappa))
    console.print(table)
    print_calibration(report.calibration)
    console.print(f"wrote the winner {report.winner.version} to {path}")


def print_gate(report: GateReport) -> None:
    """Print the gate table (one row per evaluator), the reasons, flaky units and redundancy, and the verdict."""
    from rich import box
    from rich.markup import escape

    from assay.suite.gate import EXIT_CODES
    from assay.suite.gate_output import dataset_label, describe_baseline

    table = Table(title=f"gate {report.run_id} on {report.units} units ({escape(report.candidate)})",
                  box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0), collapse_padding=True,
                  caption="rate: pass rate over scored units; base: baseline; unsc.: unscored + errors")
    # Fits 80 columns: numbers never wrap (the CI goes on a second line), names and results fold.
    for name in ("evaluator", "n", "rate", "min", "base", "diff [95% CI]", "p", "unsc.", "result"):
        wraps = name in ("evaluator", "result")
        table.add_column(escape(name), no_wrap=not wraps, overflow="fold",
                         min_width=14 if name == "evaluator" else None)
    for i in report.items:
        c = i.comparison
        table.add_row(escape(i.evaluator), str(i.n), "-" if i.pass_rate is None else f"{i.pass_rate:.3f}",
                      f"{i.min_pass_rate:.2f}", "-" if i.baseline_pass_rate is None else f"{i.baseline_pass_rate:.3f}",
                      "-" if c is None else escape(f"{c.diff:+.3f}\n[{c.ci_low:+.3f}, {c.ci_high:+.3f}]"),
                      "-" if c is None else f"{c.p_value:.3g}", f"{i.error_share:.0%}",
                      "[green]pass[/green]" if i.passed else "[red]FAIL[/red] " + ", ".join(i.failures))
    console.print(table)
    console.print(escape(describe_baseline(report)) + f"; repeat {report.repeat}, alpha {report.alpha:g}")
    for i in report.items:
        console.print(f"  {escape(i.evaluator)} @ {i.evaluator_version}, judge {escape(i.judge_model or '(code)')}, "
                      f"ground-truth dataset {dataset_label(i.dataset_version)}")
        for line in (*i.reasons, *i.notes):
            console.print(f"  {escape(i.evaluator)}: {escape(line)}")
    for f in report.flaky_units:
        console.print(f"  [yellow]flaky[/yellow] {escape(f.evaluator)} {escape(f.unit_id)}: repeats "
                      f"{', '.join(f.outcomes)} -> {f.verdict}")
    for p in report.redundant:
        console.print(f"  [yellow]redundant?[/yellow] {escape(p.evaluator_a)} and {escape(p.evaluator_b)}: "
                      f"r = {p.r:.3f} on {p.n_units} units (probably one dimension)")
    for check in report.usage_checks:
        state = "[green]pass[/green]" if check.passed else f"[red]FAIL[/red] {check.failure}"
        console.print(f"  {check.metric}: {state}: {escape(check.reason)}")
    verdict = "[green]PASS[/green]" if report.passed else "[red]FAIL[/red]"
    console.print(f"gate: {verdict} (exit {report.exit_code}: {EXIT_CODES[report.exit_code]})")


def _write_output(path: str, text: str) -> None:
    from pathlib import Path

    target = Path(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc}") from exc


@handle_errors
def gate_cmd(
    ctx: typer.Context,
    candidate: Annotated[str | None, typer.Option(
        "--candidate", "--units", help=f"The candidate's units (--units is the older name): {UnitSelection.usage()} "
        "(comma = and). Omitted: all units. An empty value (\"\", \"prefix:\") is refused with exit 2, so an unset "
        "CI variable never gates everything.",
        envvar=["ASSAY_GATE_CANDIDATE", "ASSAY_GATE_UNITS"])] = None,
    baseline: Annotated[str | None, typer.Option(
        help="What to compare with: a previous gate run id (its stored scores), or a unit selection (the suite "
        "runs on those units too).", envvar="ASSAY_GATE_BASELINE")] = None,
    alpha: Annotated[float | None, typer.Option(
        help="Significance level of a regression (default: gate_alpha setting, 0.05).", envvar="ASSAY_GATE_ALPHA")]
    = None,
    max_unscored: Annotated[float | None, typer.Option(
        help="Tolerated share of unscored + error units per evaluator before exit 3 (default: gate_max_unscored "
        "setting, 0.1).", envvar="ASSAY_GATE_MAX_UNSCORED")] = None,
    repeat: Annotated[int, typer.Option(
        min=1, help="Score every unit K times (each judge repeat is a fresh call); units whose verdicts "
        "disagree are listed as flaky; a unit's verdict is the majority (a tie is fail).",
        envvar="ASSAY_GATE_REPEAT")] = 1,
    pair_by: Annotated[str, typer.Option(
        help="How candidate and baseline units are matched: auto (unit id, else content hash, else the dataset "
        "item attribute dataset_item_id/item_id/task_id), unit, content, item, or none (independent samples).",
        envvar="ASSAY_GATE_PAIR_BY")] = "auto",
    junit: Annotated[str | None, typer.Option(
        help="Write JUnit XML here (one test case per evaluator).", envvar="ASSAY_GATE_JUNIT")] = None,
    markdown: Annotated[str | None, typer.Option(
        help="Write a Markdown summary here, ready to post as a pull-request comment.",
        envvar="ASSAY_GATE_MARKDOWN")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON on stdout (with lineage).")]
    = False,
    executor: ExecutorOpt = None,
    ray_address: RayAddressOpt = None,
    max_cost_increase: Annotated[float | None, typer.Option(
        help="Also fail (exit 1) when the candidate's mean cost per unit is significantly more than this share "
        "above the baseline's (0.2: 20%); exit 3 when cost is unknown on too many units. Off by default.",
        envvar="ASSAY_GATE_MAX_COST_INCREASE")] = None,
    max_latency_increase: Annotated[float | None, typer.Option(
        help="The same for the mean latency per unit (wall time of its traces).",
        envvar="ASSAY_GATE_MAX_LATENCY_INCREASE")] = None,
    allow_judge_change: AllowJudgeChangeOpt = False,
    refresh: RefreshOpt = False,
) -> None:
    """Run the active evaluators on the candidate's units and gate the change.

    Per evaluator it fails on a threshold miss (pass rate below min_pass_rate) or a significant
    regression against the baseline: p < alpha and a drop beyond gate_margin, by McNemar's exact
    test when both sides scored the same inputs (paired), else Fisher's exact test; reported with
    the difference in pass rate and its 95% CI. With --max-cost-increase / --max-latency-increase it
    also fails on a significant rise of the mean cost or latency per unit over the baseline's.

    An evaluator whose judge (provider, model, base URL, sampling parameters, from its file, assay.toml or
    the environment) is not the one its calibration certified is refused with exit 2, naming both judges,
    unless --allow-judge-change (recorded in the run and the scores' lineage).

    Exit codes: exit 0 pass; exit 1 regression or threshold miss (the only exit 1); exit 2 usage or
    configuration error; exit 3 too many evaluator errors (unscored + errors above --max-unscored) or
    any other failure.
    """
    from assay.suite.gate import report_json
    from assay.suite.gate_output import to_junit, to_markdown

    selection = UnitSelection.parse(candidate)  # a bad selection stops here, before the store or a judge opens
    app = get_ctx(ctx)
    kind, address = executor_choice(app, executor, ray_address)
    with progress_bar("gate", None) as advance:
        report = run_gate(app.store, app.settings, judge_for(app, refresh=refresh), selection, baseline, advance,
                          repeat=repeat, alpha=alpha, max_unscored=max_unscored,
                          pair_by=pair_by,  # type: ignore[arg-type]
                          executor=kind, ray_address=address, max_cost_increase=max_cost_increase,
                          max_latency_increase=max_latency_increase, allow_judge_change=allow_judge_change)
    if junit:
        _write_output(junit, to_junit(report))
    if markdown:
        _write_output(markdown, to_markdown(report))
    if as_json:
        typer.echo(json.dumps(report_json(report), indent=2))
    else:
        print_gate(report)
    raise typer.Exit(report.exit_code)
