"""The CLI's exit codes are one table (``assay._cli.exit_codes``), shown in the README, and exit 1 is
only ever a check's "no": a gate regression, a drift alert, a failed doctor check, nothing ingested.
Errors are 2 (usage, configuration, environment) or 3 (runtime failure, a crash), never 1."""

from __future__ import annotations

import json
import os
import re
import signal
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
from assay._cli.exit_codes import MEANINGS, ExitCode, exit_code_for
from assay._cli.main import app
from assay.exceptions import AssayError, ConfigError, IngestError, JudgeError, MissingDependency, UsageError

from .conftest import AIRLINE, ROOT

runner = CliRunner()


def _subclasses(cls: type) -> Iterator[type]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def _commands(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, Any]]:
    subs = getattr(cmd, "commands", None)
    if subs:
        for name, sub in subs.items():
            yield from _commands(sub, (*path, name))
    else:
        yield " ".join(path), cmd


def test_the_readme_shows_the_table() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## The command line", 1)[1].split("\n## ", 1)[0]
    rows = dict(re.findall(r"^\| (\d+) \| (.+) \|$", section, flags=re.MULTILINE))
    assert {int(code) for code in rows} == {int(code) for code in ExitCode} == {int(code) for code in MEANINGS}
    for command in ("assay gate", "assay drift", "assay doctor", "assay ingest"):
        assert command in rows["1"]  # every "no" of a check is listed with its command
    assert "runtime failure" in rows["3"] and "configuration" in rows["2"]


def test_every_command_maps_its_errors() -> None:
    """A command without ``handle_errors`` would exit 1 on any exception (Python's default)."""
    commands = dict(_commands(typer.main.get_command(app)))
    assert {"gate", "drift", "doctor", "ingest", "demo", "calibrate", "serve", "worker"} <= set(commands)
    unwrapped = [name for name, cmd in commands.items() if getattr(cmd.callback, "__wrapped__", None) is None]
    assert unwrapped == []


@pytest.mark.parametrize("exc, code", [
    (UsageError("bad"), 2), (ConfigError("bad", "assay.toml"), 2), (MissingDependency("x", "pip install x"), 2),
    (FileNotFoundError(2, "No such file"), 2), (JudgeError("judge down"), 3), (IngestError("f", "bad"), 3),
    (AssayError("?"), 3), (TypeError("bug"), 3), (KeyboardInterrupt(), 130),
])
def test_exit_code_for(exc: BaseException, code: int) -> None:
    assert exit_code_for(exc) == code


def test_no_error_of_assay_exits_1() -> None:
    classes = [AssayError, *_subclasses(AssayError)]
    assert len(classes) > 10  # the whole tree, including classes defined outside assay.exceptions
    for cls in classes:
        assert exit_code_for(cls.__new__(cls)) in (ExitCode.USAGE, ExitCode.FAILURE), cls


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ws = tmp_path_factory.mktemp("exits")
    (ws / "two.json").write_text(json.dumps(json.loads(AIRLINE.read_text())[:2]))
    assert runner.invoke(app, ["--workspace", str(ws), "ingest", str(ws / "two.json")]).exit_code == 0
    return ws


@pytest.mark.parametrize("raised, shown", [
    (JudgeError("the judge endpoint refused the connection"), "error: the judge endpoint refused the connection"),
    (TypeError("'NoneType' object is not subscriptable"), "unexpected TypeError (a bug in assay)"),
])
def test_a_gate_that_fails_exits_3_not_1(ws: Path, monkeypatch: pytest.MonkeyPatch, raised: Exception,
                                         shown: str) -> None:
    """Fault injection into the real command: whatever breaks inside the gate is not a regression."""
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise raised

    monkeypatch.setattr("assay._cli.evaluate.run_gate", broken)
    result = runner.invoke(app, ["--workspace", str(ws), "gate", "--candidate", "all"])
    assert result.exit_code == 3, result.output
    assert shown in " ".join(result.output.split())
    assert ("Traceback" in result.output) == isinstance(raised, TypeError)  # a bug shows where it happened


def test_ctrl_c_is_130_and_debug_keeps_a_bug_visible(tmp_path: Path) -> None:
    demo = typer.Typer()

    @demo.command()
    @handle_errors
    def stop(kind: str) -> None:
        raise KeyboardInterrupt if kind == "interrupt" else ZeroDivisionError("division by zero")

    assert runner.invoke(demo, ["interrupt"]).exit_code == 130
    debug = runner.invoke(demo, ["bug"], env={"ASSAY_DEBUG": "1"})
    assert isinstance(debug.exception, ZeroDivisionError)


def test_usage_errors_of_the_framework_stay_2(ws: Path) -> None:
    assert runner.invoke(app, ["--workspace", str(ws), "gate", "--repeat", "0"]).exit_code == 2
    assert runner.invoke(app, ["--workspace", str(ws), "gate", "--no-such-flag"]).exit_code == 2


def test_labels_import_with_nothing_imported_exits_1_with_the_count_and_first_reasons(ws: Path) -> None:
    """Every record rejected (or none at all) is the import's "no": exit 1, never a silent 0."""
    bad = ws / "bad.jsonl"
    bad.write_text("\n".join(json.dumps({"unit": f"no/such/unit-{i}", "annotator": "a", "label": "pass"})
                             for i in range(8)) + "\n{broken\n")
    many = ws / "many.jsonl"
    many.write_text("".join(json.dumps({"unit": f"no/such/unit-{i}", "annotator": "a", "label": "pass"}) + "\n"
                            for i in range(60)))
    listed = runner.invoke(app, ["--workspace", str(ws), "labels", "import", str(many)])
    assert listed.exit_code == 1 and "... and 10 more skipped (the first 50 are listed)" in listed.output
    result = runner.invoke(app, ["--workspace", str(ws), "labels", "import", str(bad)])
    assert result.exit_code == 1, result.output
    said = " ".join(result.output.split())
    assert "imported 0 labels; skipped 9" in said
    assert "nothing imported: all 9 record(s) rejected; first reasons: line 1: unknown unit 'no/such/unit-0'" in said
    assert "line 5: unknown unit 'no/such/unit-4'" in said.split("first reasons:")[1]
    assert "line 6:" not in said.split("first reasons:")[1]  # the first five reasons only
    (ws / "empty.jsonl").write_text("\n")
    empty = runner.invoke(app, ["--workspace", str(ws), "labels", "import", str(ws / "empty.jsonl")])
    assert empty.exit_code == 1 and "the file holds no label record" in empty.output
    good = ws / "good.jsonl"
    good.write_text(json.dumps({"unit": "tau-airline/task-0/trial-0", "annotator": "a", "label": "pass"}) + "\n"
                    + json.dumps({"unit": "no/such", "annotator": "a", "label": "pass"}) + "\n")
    partial = runner.invoke(app, ["--workspace", str(ws), "labels", "import", str(good)])
    assert partial.exit_code == 0 and "imported 1 labels; skipped 1" in partial.output
    again = runner.invoke(app, ["--workspace", str(ws), "labels", "import", str(good)])  # the same file again
    assert again.exit_code == 0, again.output
    assert "imported 0 labels; skipped 1; 1 already stored (not written again)" in " ".join(again.output.split())
    missing = runner.invoke(app, ["--workspace", str(ws), "labels", "import", str(ws / "nope.jsonl")])
    assert missing.exit_code == 2


def _assay(ws: Path, *args: str) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ASSAY_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), env.get("PYTHONPATH", "")])
    return subprocess.Popen([sys.executable, "-m", "assay", "--workspace", str(ws), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ws)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ctrl_c_stops_the_worker_gracefully_then_exits_130(tmp_path: Path) -> None:
    proc = _assay(tmp_path, "worker", "--poll-interval", "0.2")
    assert proc.stderr is not None
    first = proc.stderr.readline()  # written once the graceful Ctrl-C handler is in place
    assert "worker: store" in first, first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, first + err
    assert "stopping after the units in hand" in err and "Traceback" not in err, err
    assert "nothing to score" in out  # the summary of a clean stop
    # a worker that stops by itself (--once drained) still exits 0
    once = _assay(tmp_path, "worker", "--once")
    out, err = once.communicate(timeout=120)
    assert once.returncode == 0, out + err


def test_ctrl_c_stops_serve_gracefully_then_exits_130(tmp_path: Path) -> None:
    import httpx

    port = _free_port()
    proc = _assay(tmp_path, "serve", "--port", str(port))
    try:
        for _ in range(600):  # until the receiver answers (or the process ended)
            try:
                httpx.get(f"http://127.0.0.1:{port}/v1/traces", timeout=1.0)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "receiver stopped (interrupted)" in err and "Traceback" not in err, err
