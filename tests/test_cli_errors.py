"""CLI bugs a fresh user hit: each is a clean ``error: ...`` with exit 2 (or a plain report), never a
traceback or a silent surprise. Real SQLite workspaces with real tau-bench airline runs (one trial, 50 units).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from assay._cli._common import handle_errors
from assay._cli.main import app
from assay._store.store import Store
from assay.evaluators import EvaluatorDef, save_evaluator
from assay.exceptions import UsageError
from assay.settings import load_settings
from assay.traces import Step, Unit

from .conftest import AIRLINE

runner = CliRunner()
CRITERION: dict[str, Any] = {"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."}


def _run(ws: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    """Exit code and output (stdout + stderr) with whitespace collapsed: Rich wraps at 80 columns."""
    result = runner.invoke(app, ["--workspace", str(ws), *args], env=env)
    assert "Traceback" not in result.output
    return result.exit_code, " ".join(result.output.split())


def always_pass(steps: list[Step], unit: Unit) -> tuple[float, str]:
    """A check that agrees with no failure label: kappa 0, so it never meets its threshold."""
    return 1.0, "ok"


def _tool_error(run: dict[str, Any]) -> bool:
    return any(m["role"] == "tool" and str(m["content"]).startswith("Error") for m in run["traj"])


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Trial 0 of the airline runs (50 units) ingested, labelled, and two code evaluators."""
    ws = tmp_path_factory.mktemp("errors")
    # 50 units hold too few human fails for the default lower-bound rule; these tests need an active
    # evaluator, so the workspace names the older point rule
    (ws / "assay.toml").write_text('[calibration]\npolicy = "point"\n')
    runs = [r for r in json.loads(AIRLINE.read_text()) if r["trial"] == 0]
    (ws / "trial-0.json").write_text(json.dumps(runs))
    code, out = _run(ws, "ingest", str(ws / "trial-0.json"))
    assert code == 0 and "50 new" in out, out
    code, out = _run(ws, "criteria", "add", "0", CRITERION["text"], "--name", "tool-ok")
    assert code == 0, out
    lines = [json.dumps({"unit": f"tau-airline/task-{r['task_id']}/trial-{r['trial']}", "annotator": "ann-1",
                         "criterion": "tool-ok", "label": "fail" if _tool_error(r) else "pass"}) for r in runs]
    (ws / "labels.jsonl").write_text("\n".join(lines) + "\n")
    code, out = _run(ws, "labels", "import", str(ws / "labels.jsonl"))
    assert code == 0, out
    for name, callable_ in [("no-tool-errors", "assay.evaluators.checks:no_tool_errors"),
                            ("always-pass", "tests.test_cli_errors:always_pass")]:
        save_evaluator(EvaluatorDef(name=name, kind="code", dimension="tool use", criterion=CRITERION,
                                    code={"callable": callable_}), ws / "evaluators" / f"{name}.yaml")
    code, out = _run(ws, "calibrate", "no-tool-errors", "--json")
    assert code == 0 and '"status": "active"' in out, out
    yield ws


def _n_units(ws: Path, selection: str | None) -> int:
    store = Store(load_settings(ws).resolved_store_url())
    try:
        return len(store.select_unit_ids(selection))
    finally:
        store.close()


@pytest.mark.parametrize("args", [["--candidate", ""], ["--candidate", "prefix:"], ["--candidate", "source:"],
                                  ["--candidate", "failed,"], ["--baseline", ""]])
def test_gate_refuses_an_empty_selection(ws: Path, args: list[str]) -> None:
    code, out = _run(ws, "gate", *args)
    assert code == 2, out
    assert "empty selection" in out


def test_selection_none_is_all_and_empty_text_is_refused(ws: Path) -> None:
    assert _n_units(ws, None) == 50 and _n_units(ws, "all") == 50
    assert _n_units(ws, "prefix:tau-airline/") == 50
    with pytest.raises(UsageError, match="empty selection"):
        _n_units(ws, "prefix:")
    code, out = _run(ws, "gate", "--help")
    words = " ".join(out.replace("│", " ").split())  # the help box wraps at the terminal's width
    assert code == 0 and "Omitted: all units" in words


def test_criteria_add_with_an_unknown_signature_is_a_usage_error(ws: Path) -> None:
    code, out = _run(ws, "criteria", "add", "999", "x", "--name", "bogus")
    assert code == 2, out
    assert "error: unknown signature 999" in out
    code, out = _run(ws, "criteria", "list", "--json")
    assert "bogus" not in out  # nothing half-written


def test_a_scale_without_its_levels_or_classes_says_what_to_give(ws: Path) -> None:
    code, out = _run(ws, "criteria", "add", "0", "How good.", "--name", "grade", "--scale", "ordinal")
    said = " ".join(out.split())
    assert code == 2 and "an ordinal scale needs at least two levels, each 'value = anchor' (got 0)" in said, out
    assert "Tuple should" not in said
    code, out = _run(ws, "criteria", "add", "0", "Why.", "--name", "cause", "--scale", "categorical",
                     "--class", "tool=a tool failed")
    assert code == 2 and "a categorical scale needs at least two classes" in " ".join(out.split()), out


def test_a_file_as_workspace_is_a_usage_error(tmp_path: Path) -> None:
    afile = tmp_path / "notes.txt"
    afile.write_text("x")
    code, out = _run(afile, "signatures")
    assert code == 2, out
    assert f"workspace {afile} is a file" in out


def test_a_missing_workspace_is_refused_by_read_commands_and_created_by_ingest(tmp_path: Path) -> None:
    missing = tmp_path / "nonexistent"
    for args in (["gate"], ["signatures"], ["criteria", "list"], ["worker", "--once"]):
        code, out = _run(missing, *args)
        assert code == 2, (args, out)
        assert f"workspace {missing} does not exist" in out and "assay ingest" in out
        assert not missing.exists()
    runs = json.loads(AIRLINE.read_text())[:2]
    (tmp_path / "two.json").write_text(json.dumps(runs))
    code, out = _run(missing, "ingest", str(tmp_path / "two.json"))
    assert code == 0 and "2 new" in out, out
    assert (missing / ".assay" / "assay.db").is_file()


def test_report_creates_missing_folders_and_refuses_an_unwritable_path(ws: Path, tmp_path: Path) -> None:
    target = tmp_path / "new" / "dir" / "x.html"
    code, out = _run(ws, "report", "-o", str(target))
    assert code == 0, out
    assert target.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    code, out = _run(ws, "report", "-o", str(blocker / "x.html"))
    assert code == 2, out
    assert f"error: cannot write the report to {blocker / 'x.html'}" in out


def test_serve_validates_the_port_range(ws: Path) -> None:
    code, out = _run(ws, "serve", "--port", "99999")
    assert code == 2, out
    assert "--port" in out and "65535" in out


def test_serve_on_a_busy_port_fails_before_announcing(ws: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, out = _run(ws, "serve", "--port", str(port))
    assert code == 2, out
    assert f"cannot listen on 127.0.0.1:{port}: the port is already in use" in out
    assert "receiver on" not in out


def _oserror_app() -> typer.Typer:
    demo = typer.Typer()

    @demo.command()
    @handle_errors
    def read(path: str) -> None:
        Path(path).read_text()

    return demo


def test_handle_errors_turns_an_oserror_into_a_clean_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-file.txt"
    result = runner.invoke(_oserror_app(), [str(missing)])
    assert result.exit_code == 2
    assert "error:" in result.output and "No such file or directory" in result.output
    assert "Traceback" not in result.output


def test_assay_debug_keeps_the_traceback_of_an_oserror(tmp_path: Path) -> None:
    result = runner.invoke(_oserror_app(), [str(tmp_path / "no-such-file.txt")], env={"ASSAY_DEBUG": "1"})
    assert isinstance(result.exception, FileNotFoundError)


def test_calibrate_again_without_force_warns_that_the_override_is_revoked(ws: Path) -> None:
    code, out = _run(ws, "calibrate", "always-pass", "--force", "ship it")
    assert code == 0, out
    assert "activated by override" in out
    code, out = _run(ws, "calibrate", "always-pass")
    assert code == 0, out  # documented: calibrate exits 0 on draft, the gate decides
    assert "status active -> draft" in out
    assert "the earlier override of always-pass (--force 'ship it') is revoked" in out
    code, out = _run(ws, "calibrate", "always-pass")  # already draft: nothing to revoke
    assert code == 0 and "revoked" not in out and "status active -> draft" not in out


def test_worker_once_with_nothing_to_do_says_so(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "worker", "--once")
    assert code == 0, out
    assert "nothing to score (no complete, sampled unit" in out and "run None" not in out


def test_resumed_backfill_reports_only_new_work_and_keeps_the_run_id_whole(ws: Path) -> None:
    run_id = "backfill-2026-11-30-no-tool-errors-failed"
    n_failed = _n_units(ws, "failed")
    assert n_failed > 0
    code, out = _run(ws, "score", "-e", "no-tool-errors", "--units", "failed", "--run-id", run_id)
    assert code == 0, out
    assert f"run {run_id}" in out and "already scored" not in out
    code, out = _run(ws, "score", "-e", "no-tool-errors", "--units", "failed", "--run-id", run_id)
    assert code == 0, out
    assert f"{n_failed} already scored in run {run_id}, 0 new" in out
    result = runner.invoke(app, ["--workspace", str(ws), "score", "-e", "no-tool-errors", "--units", "failed",
                                 "--run-id", run_id, "--json"])
    data = json.loads(result.stdout)
    assert data["written"] == 0 and data["already_scored"] == n_failed and data["units_per_s"] is None


def test_evaluators_list_shows_whole_names_at_80_columns(ws: Path) -> None:
    result = runner.invoke(app, ["--workspace", str(ws), "evaluators", "list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert max(len(line) for line in lines) <= 80 and "…" not in result.output
    assert lines[0].split() == ["name", "version", "kind", "criterion", "status", "agreement", "threshold"]
    assert {line.split()[0] for line in lines[2:] if line.strip()} == {"no-tool-errors", "always-pass"}


def test_unreachable_ray_address_fails_fast_without_touching_ray(ws: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import assay.suite.ray_executor as ray_executor

    def no_ray() -> Any:
        raise AssertionError("ray imported before the address was checked")

    monkeypatch.setattr(ray_executor, "import_ray", no_ray)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    started = time.monotonic()
    code, out = _run(ws, "score", "-e", "no-tool-errors", "--units", "failed", "--executor", "ray",
                     "--ray-address", f"127.0.0.1:{port}")
    assert code == 2, out
    assert f"cannot reach Ray at 127.0.0.1:{port}" in out
    assert time.monotonic() - started < 10


def test_an_invalid_env_value_names_the_variable(ws: Path) -> None:
    code, out = _run(ws, "gate", env={"ASSAY_GATE_ALPHA": "abc"})
    assert code == 2, out
    assert "error: ASSAY_GATE_ALPHA: input should be a valid number" in out
    assert "errors.pydantic.dev" not in out and "(got 'abc')" in out


def test_signals_of_an_unknown_unit_is_a_usage_error(ws: Path) -> None:
    code, out = _run(ws, "signals", "--unit", "no-such-unit")
    assert code == 2 and "no-such-unit" in out


def test_a_reader_that_stops_early_is_not_an_error() -> None:
    script = ("import sys\nfrom assay._cli._common import handle_errors\n"
              "@handle_errors\ndef cmd() -> None:\n    raise BrokenPipeError(32, 'Broken pipe')\n"
              "try:\n    cmd()\nexcept SystemExit as e:\n    raise\nexcept BaseException as e:\n"
              "    sys.exit(getattr(e, 'exit_code', 99))\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "error" not in proc.stderr, proc.stderr


def out_of_range(steps: list[Step], unit: Unit) -> tuple[float, str]:
    """A check whose score is outside [0, 1]: every unit is an error."""
    return 1.7, "too sure"


def says_yes(steps: list[Step], unit: Unit) -> Any:
    """A check that returns a word instead of a score: every unit is an error."""
    return "yes"


def _calibration_state(ws: Path, name: str) -> tuple[int, str | None]:
    """(calibration runs that reported on a test split, the stored status of evaluator ``name``'s version)."""
    from assay._store.scores import read_params
    from assay._store.tables import RunRow
    from assay.calibration.calibrate import evaluator_record
    from assay.calibration.splits import CalibrationParams
    from assay.evaluators import load_evaluators

    settings = load_settings(ws, env={})
    store = Store(settings.resolved_store_url())
    try:
        with store.session() as s:
            runs = [read_params(r, CalibrationParams) for r in s.query(RunRow).filter(RunRow.kind == "calibration")]
        defn = next(d for d in load_evaluators(ws / "evaluators") if d.name == name)
        record = evaluator_record(store, defn)
        return sum(p.test_touched for p in runs), record.status if record else None
    finally:
        store.close()


@pytest.mark.parametrize(("name", "callable_", "error"), [
    ("over-one", "tests.test_cli_errors:out_of_range", "outside [0, 1]"),
    ("says-yes", "tests.test_cli_errors:says_yes", "yes")])
def test_calibrate_that_scores_nothing_exits_3_without_using_the_test_split(ws: Path, name: str, callable_: str,
                                                                           error: str) -> None:
    save_evaluator(EvaluatorDef(name=name, kind="code", dimension="tool use", criterion=CRITERION,
                                code={"callable": callable_}), ws / "evaluators" / f"{name}.yaml")
    before = _calibration_state(ws, name)
    code, out = _run(ws, "calibrate", name)
    assert code == 3, out
    assert f"{name} scored none of the 50 labelled items (50 error)" in out and error in out, out
    assert "to certify" not in out and "test reported" not in out  # no metrics table, no labelling plan
    assert _calibration_state(ws, name) == before  # no test-split use recorded, status unchanged (none)


class NotFoundJudge:
    """A local HTTP server that answers every request 404 Not Found (a base_url with a wrong path); counts them."""

    def __init__(self) -> None:
        import http.server
        import threading

        counter = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                counter.requests += 1
                self.rfile.read(int(self.headers.get("content-length") or 0))
                body = b'{"error": {"message": "Not Found", "type": "not_found"}}'
                self.send_response(404)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.requests = 0
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/wrong/path"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_judge_that_answers_404_stops_calibration_at_once_naming_the_url(ws: Path) -> None:
    judge_eval = {"name": "polite-judge", "kind": "llm_judge", "dimension": "tool use", "criterion": CRITERION,
                  "judge": {"labels": {"pass": 1.0, "fail": 0.0}}}
    save_evaluator(EvaluatorDef.model_validate(judge_eval), ws / "evaluators" / "polite-judge.yaml")
    server = NotFoundJudge()
    try:
        env = {"ASSAY_JUDGE__PROVIDER": "openai", "ASSAY_JUDGE__MODEL": "fake-judge", "OPENAI_API_KEY": "sk-test",
               "ASSAY_JUDGE__BASE_URL": server.url, "ASSAY_JUDGE__CONCURRENCY": "1"}
        before = _calibration_state(ws, "polite-judge")
        code, out = _run(ws, "calibrate", "polite-judge", env=env)
    finally:
        server.close()
    assert code == 3, out
    assert f"judge fake-judge at {server.url} answered HTTP 404 Not Found" in out, out
    assert "to certify" not in out
    assert server.requests == 1  # the first 404 stops the run: no retry, no further unit
    assert _calibration_state(ws, "polite-judge") == before


def test_an_unknown_signal_kind_source_or_signature_is_a_usage_error(ws: Path) -> None:
    code, out = _run(ws, "signals", "--kind", "tool_lop")
    said = " ".join(out.split())
    assert code == 2 and "unknown signal kind 'tool_lop': one of" in said and "tool_loop" in said, out
    code, out = _run(ws, "signals", "--source", "cues")
    assert code == 2 and "unknown signal source 'cues'" in " ".join(out.split()), out
    code, out = _run(ws, "signals", "--kind", "tool_loop")
    assert code == 0, out
    code, out = _run(ws, "signatures", "history", "99")
    assert code == 2 and "signature not found: '99'" in " ".join(out.split()), out
