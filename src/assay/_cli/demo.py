"""``assay demo``: the whole loop on real agent traces, into a fresh workspace."""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.rule import Rule
from rich.table import Table

from assay._cli._common import console, handle_errors, progress_bar
from assay._cli.demo_replay import run_replay
from assay._cli.demo_signals import show_blind_signals
from assay._cli.evaluate import print_calibration, print_gate
from assay._cli.exit_codes import ExitCode
from assay._store import Store
from assay.annotations import Annotation, add_annotations, add_criterion
from assay.annotations.agentrx import categories, read_ground_truth, run_annotation
from assay.calibration import build_dataset, calibrate, export_dataset
from assay.evaluators import EvaluatorDef, save_evaluator
from assay.exceptions import JudgeError, NativeCrash, RuntimeFailure, UsageError
from assay.models import JudgeClient, make_judge
from assay.reports import write_report
from assay.settings import Settings, load_settings
from assay.signals import update_signals
from assay.signatures import Signature, build_signatures, list_signatures
from assay.suite import run_gate
from assay.traces import Unit, read_file

AIRLINE = Path("tau-bench-airline/historical_trajectories/gpt-4o-airline.json")
RETAIL = Path("agentrx/data/tau_retail/tau_dataset_full.json")
GROUND_TRUTH = Path("agentrx/data/ground_truth/tau_ground_truth.json")

RESOLVES = ("The agent resolves the customer's request the way the domain policy requires: it authenticates the "
            "user, takes the right actions with the right arguments, and tells the user correct results. "
            "A run where the request is left unresolved, handled against policy, or answered wrongly fails.")
TOOLS = ("Every tool call is valid: the agent calls the right tool with well-formed, correct arguments, and a tool "
         "error is never left unhandled. Invalid invocations fail.")


def _step(title: str) -> None:
    console.print(Rule(f"[bold]{title}"))


DEMO_TOML = """# assay demo workspace (written by `assay demo`)
store_url = "sqlite:///.assay/assay.db"

[judge]
provider = "local"          # SmolLM2-135M-Instruct via llama.cpp, offline
# a 135M model reads slowly on 2 CPU cores (~400 prompt tokens/s): the judge sees the
# newest 1,500 characters of each run's timeline
max_prompt_chars = 1500

[lifecycle]
# the demo replays production day by day: a signature's lifecycle reads the latest day's scores
window_days = 1
"""


def _fresh_workspace(out: Path) -> Settings:
    for sub in (".assay", "evaluators", "datasets"):
        shutil.rmtree(out / sub, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "assay.toml").write_text(DEMO_TOML, encoding="utf-8")
    return load_settings(out)


def _ingest(store: Store, data: Path) -> list[Unit]:
    _step("1. capture: ingest 300 tau-bench runs (200 airline + 100 retail)")
    units: list[Unit] = []
    for rel in (AIRLINE, RETAIL):
        path = data / rel
        if not path.exists():
            raise UsageError(f"demo data not found: {path} (pass --data PATH/TO/shared/data)")
        result = read_file(path)
        units.extend(result.units)
        counts = store.add_units(result.units)
        passed = sum(u.outcome == "pass" for u in result.units)
        console.print(f"{rel.name}: {len(result.units)} units ({passed} reward 1, {len(result.units) - passed} "
                      f"reward 0), {counts.spans_new} spans, {len(result.rejected)} rejected")
    return units


def _signatures(store: Store, settings: Settings, failed: list[str]) -> list[Signature]:
    _step("3. signatures: cluster the failed units")
    n_failed = len(store.select_unit_ids("failed"))
    try:
        with progress_bar("embedding + clustering", n_failed) as advance:
            sigs = build_signatures(store, settings, progress=advance)
    except NativeCrash as exc:
        console.print(f"[red]signatures failed:[/red] {escape(str(exc))}")
        failed.append(f"signatures: {exc}")
        return []
    table = Table("#", "units", "share", "label", "signal mix", title=f"top signatures of {n_failed} failed units")
    mixes = {s.id: s.signal_mix_text for s in list_signatures(store)}
    for s in sigs[:6]:
        table.add_row(str(s.id), str(s.size), f"{100 * s.share:.0f}%", escape(s.label), escape(mixes.get(s.id, "")))
    console.print(table)
    return sigs


def _labels(store: Store, data: Path, sigs: list[Signature]) -> None:
    _step("4. annotations: criteria and expert labels")
    top = sigs[0].id if sigs else None
    tool_sig = next((s.id for s in sigs if "error=" in s.structural_key and "error=none" not in s.structural_key), top)
    add_criterion(store, RESOLVES, name="resolves-request", signature_id=top)
    add_criterion(store, TOOLS, name="tool-calls-valid", signature_id=tool_sig)
    retail = {u.attributes.get("task_id"): u.unit_id for u in store.units(store.select_unit_ids("prefix:tau-retail/"))}
    runs = read_ground_truth(data / GROUND_TRUTH)
    notes: list[Annotation] = []
    missing = []
    for run in runs:
        uid = retail.get(run["trajectory_id"])
        if uid is None:
            missing.append(run["trajectory_id"])
            continue
        notes.append(run_annotation(run, uid, "resolves-request"))
        invalid = "invalid invocation" in categories(run)
        notes.append(run_annotation(run, uid, "tool-calls-valid", label="fail" if invalid else "pass"))
    human = len(notes) // 2
    env_pass = [u for u in store.units(list(retail.values())) if u.outcome == "pass"]
    for u in env_pass:
        for crit in ("resolves-request", "tool-calls-valid"):
            notes.append(Annotation(unit_id=u.unit_id, annotator="tau-bench-environment", annotator_kind="code",
                                    label="pass", criterion=crit, source="tau-bench reward = 1.0",
                                    rationale="the environment's check found the final state and outputs correct"))
    add_annotations(store, notes)
    console.print(f"Imported [bold]{human}[/bold] human failure annotations of tau-bench retail runs: these are the "
                  f"AgentRx dataset's own human annotations (failure steps, categories, root cause), not ours. "
                  f"{len(missing)} annotated runs are not among the ingested runs (task ids {missing}).")
    console.print(f"Added {len(env_pass)} pass labels from tau-bench's environment check (reward 1, "
                  "annotator_kind=code) so the ground truth has both classes.")
    console.print("Criterion 'tool-calls-valid': a human-annotated run fails it when the annotators recorded an "
                  "'Invalid Invocation' failure, and passes it otherwise.")


def _evaluators(settings: Settings) -> list[EvaluatorDef]:
    _step("5. evaluators: one code check and one LLM judge (local SmolLM2-135M)")
    folder = settings.evaluators_path()
    defs = [
        EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use",
                     description="Fails a unit when any tool call returned an error.",
                     criterion={"name": "tool-calls-valid", "version": 1, "text": TOOLS},
                     code={"callable": "assay.evaluators.checks:no_tool_errors"}, min_pass_rate=0.5,
                     sample_rate=1.0),
        EvaluatorDef(name="resolves-request-judge", kind="llm_judge", dimension="task success",
                     description="LLM judge of whether the agent resolved the request per policy.",
                     criterion={"name": "resolves-request", "version": 1, "text": RESOLVES},
                     judge={}, min_pass_rate=0.5),
    ]
    for d in defs:
        path = save_evaluator(d, folder / f"{d.name}.yaml")
        console.print(f"wrote {path}")
    return defs


OVERRIDE = ("demo: activated below threshold so the gate has an evaluator to run; a real team would "
            "improve the check or the labels first")


def _judge_failure(judge: JudgeClient, n_errors: int, n_items: int) -> str | None:
    """Why the judge part of the demo failed (None: it did not): its process crashed, or every unit erred."""
    inner = getattr(judge, "inner", judge)
    crash = getattr(inner, "last_crash", None)
    if crash:
        return f"{n_errors} of {n_items} units are errors: {crash}"
    if n_items and n_errors == n_items:
        return f"all {n_items} units are errors"
    return None


def _calibrate(store: Store, settings: Settings, defs: list[EvaluatorDef], judge_limit: int | None,
               failed: list[str]) -> None:
    _step("6. calibration: agreement with the labels")
    judge = make_judge(settings.judge, store)
    for d in defs:
        ds = build_dataset(store, d.criterion.name)
        export_dataset(ds, settings.workspace / "datasets" / f"{d.criterion.name}.v{ds.version}.jsonl")
        if d.uses_judge and judge_limit is not None and judge_limit < len(ds.items):
            ds = ds.model_copy(update={"items": ds.items[:judge_limit]})
        t0 = time.perf_counter()
        try:
            with progress_bar(f"calibrating {d.name}", len(ds.items)) as advance:
                report = calibrate(store, d, judge if d.uses_judge else None, settings.judge, advance,
                                   dataset=ds, min_kappa=settings.min_kappa, certification=settings.calibration)
        except RuntimeFailure as exc:  # every item an error: nothing was measured
            if isinstance(exc, JudgeError) or not d.uses_judge:
                raise
            why = _judge_failure(judge, len(ds.items), len(ds.items)) or str(exc)
            console.print(f"[red]the judge part failed:[/red] {escape(why)}")
            failed.append(f"judge: {why}")
            continue
        print_calibration(report)
        console.print(f"[dim]({time.perf_counter() - t0:.1f} s)[/dim]")
        problem = _judge_failure(judge, report.n_errors, len(ds.items)) if d.uses_judge else None
        if problem:
            console.print(f"[red]the judge part failed:[/red] {escape(problem)}")
            failed.append(f"judge: {problem}")
            continue
        if d.uses_judge and not report.meets_threshold:
            console.print("The 135M-parameter local judge is too weak to trust on this criterion: it stays a draft "
                          "and the gate will not use it. Point the [judge] section of assay.toml at a real model "
                          "to do better.", markup=False)
        if not d.uses_judge and not report.meets_threshold:
            console.print(f"Explicit override for [bold]{d.name}[/bold] (what `assay calibrate {d.name} --force "
                          "REASON` does), recorded with the evaluator version:")
            report = calibrate(store, d, None, settings.judge, dataset=ds, force_reason=OVERRIDE,
                               min_kappa=settings.min_kappa, certification=settings.calibration)
            console.print(f"  status {report.status}; reason: {report.override_reason}")


def _gate(store: Store, settings: Settings) -> None:
    _step("7. gate: the active evaluators, as CI runs them")
    judge = make_judge(settings.judge, store)
    # Two different sets of runs, so the gate compares them unpaired (Fisher's exact test); the
    # failed runs stand in for a release that made the agent worse.
    runs = [("baseline: the airline runs that succeeded", "prefix:tau-airline/,passed", None),
            ("candidate: the airline runs that failed, against that baseline", "prefix:tau-airline/,failed", "BASE")]
    base: str | None = None
    for title, units, baseline in runs:
        flag = f" --baseline {base}" if baseline else ""
        console.print(f"[bold]{title}[/bold]  (assay gate --units {units}{flag})")
        try:
            with progress_bar("gate", None) as advance:
                report = run_gate(store, settings, judge, units=units, baseline=base if baseline else None,
                                  progress=advance)
        except UsageError as exc:
            console.print(f"gate not run: {exc}")
            return
        print_gate(report)
        console.print(f"-> `assay gate` exits {report.exit_code}")
        base = report.run_id


def _production(store: Store, settings: Settings, units: list[Unit]) -> None:
    _step("8. production: the online worker scores the traffic; failed scores become failure signals")
    console.print("Each active evaluator scores its sample (the code check: every unit, sample_rate 1.0); a failed "
                  "score is a failure signal; at the end of a pass the worker takes the units it newly marks failed "
                  "into the signatures and moves each signature's lifecycle.")
    run_replay(store, settings, units, datetime.now(UTC).date())


@handle_errors
def demo(
    data: Annotated[Path, typer.Option(help="The shared data folder.", envvar="ASSAY_DEMO_DATA")]
    = Path("../shared/data"),
    out: Annotated[Path, typer.Option("--out", help="Workspace folder to (re)create.")] = Path("demo-workspace"),
    judge_limit: Annotated[int | None, typer.Option(help="Calibrate the LLM judge on at most N labelled units.")]
    = None,
) -> None:
    """Run the whole loop on real data: ingest, failure signals (outcome withheld), cluster, label, evaluate,
    calibrate, gate, score production traffic with the online worker, report.

    When a stage's model fails (the local judge's process crashed, the embedding model died) the demo
    goes on with the other stages, writes its report, names what failed, and exits 3."""
    t0 = time.perf_counter()
    settings = _fresh_workspace(out)
    store = Store(settings.resolved_store_url(), settings.signals, settings.environments)
    failed: list[str] = []
    units = _ingest(store, data)
    _step("2. failure signals: what the detectors find with the recorded outcome withheld")
    show_blind_signals(units, settings.signals)
    stored = update_signals(store, settings.signals)
    n_failed = len(store.select_unit_ids("failed"))
    console.print(f"Stored {stored.signals} failure signals of {stored.units} units (what `assay ingest` does as it "
                  f"goes, or `assay signals update`), outcome included: {n_failed} units count as failed (a failure "
                  f"score at or above {settings.signals.fail_at:g}), {sum(u.outcome == 'fail' for u in units)} "
                  "of them by their recorded outcome.")
    sigs = _signatures(store, settings, failed)
    _labels(store, data, sigs)
    defs = _evaluators(settings)
    _calibrate(store, settings, defs, judge_limit, failed)
    _gate(store, settings)
    _production(store, settings, units)
    _step("9. report")
    path = write_report(store, out / "report.html")
    console.print(f"wrote {path}  ({time.perf_counter() - t0:.0f} s in all)")
    if failed:
        for problem in failed:
            console.print(f"[red]failed:[/red] {escape(problem)}")
        console.print("The demo finished its other stages; run `assay doctor` for the fix. Exit code 3.")
        raise typer.Exit(ExitCode.FAILURE)
