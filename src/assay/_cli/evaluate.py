"""``assay evaluators``, ``assay calibrate`` and ``assay gate``."""

from __future__ import annotations

import difflib
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from assay._cli._common import AppContext, console, get_ctx, handle_errors, progress_bar
from assay.calibration import CalibrationReport, Estimate, calibrate
from assay.evaluators import EvaluatorDef, content_version, evaluator_json_schema, load_evaluators
from assay.exceptions import NotFoundError, UsageError
from assay.models import JudgeClient, make_judge
from assay.suite import GateReport, run_gate

evaluators_app = typer.Typer(help="Evaluators: one YAML file each in evaluators/.", no_args_is_help=True)


def find_evaluator(app: AppContext, name: str) -> EvaluatorDef:
    """The evaluator named ``name`` in the workspace's evaluators folder.

    Raises:
        NotFoundError: no such evaluator.
    """
    folder = app.settings.evaluators_path()
    for defn in load_evaluators(folder) if folder.exists() else []:
        if defn.name == name:
            return defn
    raise NotFoundError("evaluator", name)


def judge_for(app: AppContext, defn: EvaluatorDef | None = None) -> JudgeClient | None:
    """The judge client an evaluator needs (None for code evaluators)."""
    if defn is not None and defn.kind == "code":
        return None
    return make_judge(app.settings.judge, app.store)


@evaluators_app.command("list")
@handle_errors
def evaluators_list(ctx: typer.Context,
                    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List evaluators with version, criterion and calibration status."""
    from assay.suite.runs import evaluator_record

    app = get_ctx(ctx)
    folder = app.settings.evaluators_path()
    rows: list[dict[str, Any]] = []
    for defn in load_evaluators(folder) if folder.exists() else []:
        rec = evaluator_record(app.store, defn)
        cal = (rec.calibration or {}) if rec else {}
        acc = ((cal.get("test") or {}).get("agreement") or {}).get("value", cal.get("agreement", {}).get("accuracy"))
        rows.append({"name": defn.name, "version": content_version(defn), "kind": defn.kind,
                     "criterion": defn.criterion.name, "status": rec.status if rec else "uncalibrated",
                     "agreement": acc, "threshold": defn.threshold})
    if as_json:
        console.print_json(json.dumps(rows))
        return
    table = Table("name", "version", "kind", "criterion", "status", "agreement", "threshold")
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
) -> None:
    """Write draft evaluators for a criterion: an llm_judge (few-shot from the train split only) and
    code checks for the checkable facts the criterion names (a tool that must or must not be called,
    a quoted phrase). Drafts are not active: calibrate them first."""
    from assay.calibration.draft import draft_evaluators
    from assay.evaluators import save_evaluator

    app = get_ctx(ctx)
    draft = draft_evaluators(app.store, criterion, shots_per_label=shots)
    folder = app.settings.evaluators_path()
    for defn in (draft.judge, *draft.checks):
        path = folder / f"{defn.name}.yaml"
        if path.exists() and not overwrite:
            console.print(f"[yellow]kept[/yellow] {path} (exists; --overwrite replaces it)")
            continue
        save_evaluator(defn, path)
        console.print(f"wrote {path}  ({defn.kind}, version {content_version(defn)})")
    console.print(f"few-shot examples from {draft.split.split_id} train: {', '.join(draft.examples) or 'none'}")


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
    import yaml

    data = defn.model_dump(mode="json")
    if defn.kind == "llm_judge":
        data["judge"] = {**defn.judge_spec().model_dump(mode="json"), "prompt": defn.prompt_template()}
    return yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)


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
    for w in r.warnings:
        console.print(f"[yellow]warning[/yellow]: {w}")
    if r.meets_threshold:
        acc = r.test.agreement.value if r.test else a.accuracy
        kappa = r.test.kappa.value if r.test else a.kappa
        console.print(f"{r.evaluator}: test agreement {f(acc)} [green]meets[/green] the threshold "
                      f"{r.threshold:.2f} (kappa {f(kappa)}) -> status [bold]{r.status}[/bold]")
    else:
        console.print(f"{r.evaluator}: [red]does NOT meet[/red] its threshold: " + "; ".join(r.notes)
                      + f" -> status [bold]{r.status}[/bold]")
    if r.override_reason:
        console.print(f"[yellow]activated by override[/yellow], reason recorded: {r.override_reason}")


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
) -> None:
    """Run an evaluator on the labelled units of its criterion and measure agreement with the labels.

    Prints n, agreement, Cohen's kappa, TPR, TNR, balanced accuracy, precision/recall on fail
    and the confusion matrix, with bootstrap 95% CIs on the held-out test split; the evaluator
    becomes active only when test agreement meets its threshold (default 0.80).
    """
    app = get_ctx(ctx)
    defn = find_evaluator(app, name)
    if tune:
        _tune(app, defn, parse_fractions(split), seed, as_json)
        return
    from assay.calibration import build_dataset

    ds = build_dataset(app.store, defn.criterion.name)
    with progress_bar(f"calibrating {name}", len(ds.items)) as advance:
        report = calibrate(app.store, defn, judge_for(app, defn), app.settings.judge, advance, dataset=ds,
                           force_reason=force, min_kappa=app.settings.min_kappa, fractions=parse_fractions(split),
                           seed=seed)
    if as_json:
        console.print_json(report.model_dump_json())
    else:
        print_calibration(report)


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
          as_json: bool) -> None:
    """``assay calibrate NAME --tune``: search on dev, calibrate the winner on test, write its file."""
    from assay.calibration.tune import tune
    from assay.evaluators import load_evaluator, save_evaluator

    with progress_bar(f"tuning {defn.name}", None) as advance:
        best, report = tune(app.store, defn, judge_for(app, defn), app.settings.judge, fractions=fractions, seed=seed,
                            progress=advance)
    folder = app.settings.evaluators_path()
    path = next(p for p in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml")])
                if load_evaluator(p).name == defn.name)
    save_evaluator(best, path)
    if as_json:
        console.print_json(report.model_dump_json())
        return
    table = Table("version", "shots/label", "example seed", "dev n", "dev agreement", "dev kappa",
                  title=f"tuning {defn.name} on dev")
    for c in report.candidates:
        mark = " (winner)" if c.version == report.winner.version else ""
        table.add_row(c.version + mark, str(c.shots_per_label), str(c.example_seed), str(c.dev.n),
                      _ci(c.dev.agreement), _ci(c.dev.kappa))
    console.print(table)
    print_calibration(report.calibration)
    console.print(f"wrote the winner {report.winner.version} to {path}")


def print_gate(report: GateReport) -> None:
    """Print the gate table and verdict."""
    table = Table("evaluator", "version", "n", "unscored", "pass rate", "threshold", "baseline", "result",
                  title=f"gate {report.run_id} on {report.units} units")
    for i in report.items:
        table.add_row(i.evaluator, i.evaluator_version, str(i.n), str(i.n_unscored + i.n_errors),
                      "-" if i.pass_rate is None else f"{i.pass_rate:.3f}", f"{i.min_pass_rate:.3f}",
                      "-" if i.baseline_pass_rate is None else f"{i.baseline_pass_rate:.3f}",
                      "[green]pass[/green]" if i.passed else "[red]FAIL[/red]: " + "; ".join(i.reasons))
    console.print(table)
    console.print("gate: [green]PASS[/green]" if report.passed else "gate: [red]FAIL[/red]")


@handle_errors
def gate_cmd(
    ctx: typer.Context,
    units: Annotated[str | None, typer.Option(help="Unit selection: all, failed, passed, labelled, prefix:TEXT, "
                                                   "source:TEXT (comma = and).", envvar="ASSAY_GATE_UNITS")] = None,
    baseline: Annotated[str | None, typer.Option(help="A previous gate run id to compare with.",
                                                 envvar="ASSAY_GATE_BASELINE")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Run the active evaluators and gate: exit 0 pass, 1 threshold miss or regression vs baseline, 2 usage error."""
    app = get_ctx(ctx)
    with progress_bar("gate", None) as advance:
        report = run_gate(app.store, app.settings, judge_for(app), units=units, baseline=baseline, progress=advance)
    if as_json:
        console.print_json(json.dumps({**report.model_dump(mode="json"), "passed": report.passed,
                                       "exit_code": report.exit_code}))
    else:
        print_gate(report)
    raise typer.Exit(report.exit_code)
