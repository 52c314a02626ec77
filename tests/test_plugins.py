"""Judge providers and trace readers come from packages through entry points, found without installing anything.

Each extension here is a ``*.dist-info`` folder with an ``entry_points.txt`` and a module, on ``sys.path``
(in this process by ``monkeypatch``, in a fresh ``assay`` process by ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from assay._store.store import Store
from assay.calibration.calibrate import save_evaluator_record
from assay.evaluators import EvaluationResult, EvaluatorDef, evaluate, save_evaluator
from assay.exceptions import ConfigError
from assay.models import make_judge
from assay.models.factory import JUDGE_PROVIDERS
from assay.settings import JudgeSettings, load_settings
from assay.traces import read_file
from tests.conftest import AIRLINE, ROOT
from tests.plugin_fixtures import fake_distribution, installed

ECHO_JUDGE = """
    import json

    from assay.models import JudgeReply


    class EchoJudge:
        '''Fails a unit whose prompt shows a tool error, passes the others.'''

        def __init__(self, settings):
            self.model_name = f"echo/{settings.model}"

        def complete(self, messages, json_schema=None):
            verdict = "fail" if "Error:" in messages[-1]["content"] else "pass"
            return JudgeReply(text=json.dumps({"reason": "echo", "verdict": verdict}), model=self.model_name)


    def echo_judge(settings):
        return EchoJudge(settings)
"""
JUDGE = EvaluatorDef.model_validate({
    "name": "resolves", "kind": "llm_judge", "dimension": "task success", "min_pass_rate": 0.0,
    "criterion": {"name": "resolves", "text": "The agent resolves the request."}})


def echo_plugin(folder: Path) -> Path:
    return fake_distribution(folder, "assay-echo-judge", {"assay.judges": {"echo": "assay_echo_judge:echo_judge"}},
                             {"assay_echo_judge": ECHO_JUDGE})


def test_an_unknown_provider_is_a_config_error_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown judge provider 'vertex'; known: local, openai, anthropic .*"
                                          r"assay.judges"):
        make_judge(JudgeSettings(provider="vertex"))


def test_a_package_adds_a_judge_provider(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    unit = read_file(AIRLINE).units[0]
    with installed(monkeypatch, echo_plugin(tmp_path / "site"), JUDGE_PROVIDERS):
        judge = make_judge(JudgeSettings(provider="echo", model="m1"))
        result = evaluate(JUDGE, unit, judge)
        assert isinstance(result, EvaluationResult) and result.judge_model == "echo/m1" and result.reason == "echo"
        assert JUDGE_PROVIDERS.names() == ("local", "openai", "anthropic", "echo")
    assert "echo" not in JUDGE_PROVIDERS.names()


def test_a_fresh_assay_process_finds_the_provider_on_its_path(tmp_path: Path) -> None:
    site = echo_plugin(tmp_path / "site")
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "assay.toml").write_text('[judge]\nprovider = "echo"\nmodel = "m2"\n')
    store = Store(load_settings(ws).resolved_store_url())
    store.add_units(read_file(AIRLINE).units[:12])
    save_evaluator(JUDGE, ws / "evaluators" / "resolves.yaml")
    save_evaluator_record(store, JUDGE, "active", None, override_reason="plugin test")
    store.close()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}
    proc = subprocess.run([sys.executable, "-m", "assay._cli", "--workspace", str(ws), "gate", "--candidate", "all",
                           "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode in (0, 1), proc.stderr[-2000:]
    (item,) = json.loads(proc.stdout)["items"]
    assert item["judge_model"] == "echo/m2" and item["n"] == 12 and item["n_errors"] == 0
    assert 0 < item["pass_rate"] < 1  # the echo judge failed the runs that show a tool error


WRAPPED_READER = """
    from typing import ClassVar

    from assay.traces import ReadResult, TraceReader, trace_reader
    from assay.traces import tau_bench


    @trace_reader("tau-wrapped")
    class WrappedReader(TraceReader):
        '''tau-bench runs inside {"wrapped_runs": [...]}; one such object per line in JSON Lines.'''

        layout: ClassVar[str] = "either"

        def detect(self, data):
            return isinstance(data, dict) and isinstance(data.get("wrapped_runs"), list)

        def read(self, data, path, name):
            runs = data["wrapped_runs"]
            return ReadResult(path=str(path), format=name).add(tau_bench.read_runs(runs, f"{name}:{path.name}"))
"""


def wrapped_plugin(folder: Path) -> Path:
    # a module entry point: importing it registers the reader with the same decorator the built-ins use
    return fake_distribution(folder, "assay-wrapped", {"assay.readers": {"wrapped": "assay_wrapped_reader"}},
                             {"assay_wrapped_reader": WRAPPED_READER})


def test_a_package_adds_a_trace_format(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from assay.exceptions import UsageError
    from assay.traces.readers import READERS, UnrecognisedFile

    runs = json.loads(AIRLINE.read_text())[:5]
    doc = tmp_path / "wrapped.json"
    doc.write_text(json.dumps({"wrapped_runs": runs}))
    lines = tmp_path / "wrapped.jsonl"
    lines.write_text("\n".join([json.dumps({"wrapped_runs": runs[:2]}), json.dumps({"wrapped_runs": runs[2:4]}),
                                '{"wrapped_runs": 3}']) + "\n")
    with installed(monkeypatch, wrapped_plugin(tmp_path / "site"), READERS):
        auto = read_file(doc)
        assert (auto.format, len(auto.units), auto.rejected) == ("tau-wrapped", 5, [])
        assert [u.unit_id for u in auto.units] == [u.unit_id for u in read_file(AIRLINE).units[:5]]
        assert read_file(doc, "tau-wrapped").units == auto.units
        jsonl = read_file(lines)  # the default read_lines: each line read as a document
        assert (jsonl.format, len(jsonl.units)) == ("tau-wrapped", 4)
        assert [r.reason[:8] for r in jsonl.rejected] == ["line 3: "]
        assert READERS.names()[-1] == "tau-wrapped" and READERS.names()[0] == "otlp-json"  # built-ins first
    with pytest.raises(UnrecognisedFile, match="unknown format"):
        read_file(doc)
    with pytest.raises(UsageError, match="unknown format 'tau-wrapped'; choose one of auto, otlp-json"):
        read_file(doc, "tau-wrapped")


def test_a_fresh_assay_process_ingests_the_new_format(tmp_path: Path) -> None:
    site = wrapped_plugin(tmp_path / "site")
    doc = tmp_path / "wrapped.json"
    doc.write_text(json.dumps({"wrapped_runs": json.loads(AIRLINE.read_text())[:3]}))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT / "src")])}
    proc = subprocess.run([sys.executable, "-m", "assay._cli", "--workspace", str(tmp_path / "ws"), "ingest",
                           str(doc), "--json"], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout)
    assert [f["format"] for f in summary["files"]] == ["tau-wrapped"] and summary["units_new"] == 3


# --- assay ingest --reader module:function: a converter without a package --------------------------
TICKET_READER = """
    import hashlib
    import json

    from assay.traces import Message, Span, Unit


    def read(path):
        '''A support-desk export: {"ticket": id, "turns": [{"from": "customer"|"agent", "text": ...}]}.'''
        data = json.loads(path.read_text())
        trace = hashlib.sha256(str(data["ticket"]).encode()).hexdigest()[:32]
        msgs = [Message(role="user" if t["from"] == "customer" else "assistant", content=t["text"])
                for t in data["turns"]]
        span = Span(trace_id=trace, span_id=trace[:16], name="ticket", kind="llm", start_ns=1, end_ns=2,
                    input_messages=tuple(m for m in msgs if m.role == "user"),
                    output_messages=tuple(m for m in msgs if m.role == "assistant"))
        return [Unit(unit_id=f"ticket/{data['ticket']}", kind="trace", source=f"tickets:{path.name}",
                     spans=(span,))]


    def wrong_shape(path):
        return {"ticket": 1}


    def not_my_format(path):
        raise ValueError("no 'turns' in this file")
"""


def _ticket_files(folder: Path) -> Path:
    folder.mkdir()
    for n in (1, 2):
        (folder / f"t{n}.json").write_text(json.dumps({"ticket": n, "turns": [
            {"from": "customer", "text": f"Where is order {n}?"}, {"from": "agent", "text": "On its way."}]}))
    return folder


def _cli(ws: Path, *args: str) -> tuple[int, str]:
    """Exit code and stdout (all output without ``--json``)."""
    from typer.testing import CliRunner

    from assay._cli.main import app

    result = CliRunner().invoke(app, ["--workspace", str(ws), "ingest", *args])
    return result.exit_code, result.stdout if "--json" in args else result.output


def test_a_reader_function_ingests_by_module_name_or_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ticket_reader.py").write_text(__import__("textwrap").dedent(TICKET_READER))
    tickets = _ticket_files(tmp_path / "tickets")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out = _cli(tmp_path / "ws", str(tickets), "--reader", "ticket_reader:read", "--json")
    assert code == 0, out
    summary = json.loads(out)
    assert summary["units_new"] == 2 and [f["format"] for f in summary["files"]] == ["ticket_reader:read"] * 2
    store = Store(f"sqlite:///{tmp_path / 'ws' / '.assay' / 'assay.db'}")
    assert store.select_unit_ids() == ["ticket/1", "ticket/2"]
    assert store.unit("ticket/1").spans[0].input_messages[0].content == "Where is order 1?"
    store.close()
    by_file = f"{tmp_path / 'ticket_reader.py'}:read"  # the file itself, no PYTHONPATH needed
    code, out = _cli(tmp_path / "ws2", str(tickets / "t1.json"), "--reader", by_file, "--json")
    assert code == 0 and json.loads(out)["units_new"] == 1, out


def test_a_reader_function_that_fails_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "ticket_reader.py").write_text(__import__("textwrap").dedent(TICKET_READER))
    tickets = _ticket_files(tmp_path / "tickets")
    monkeypatch.syspath_prepend(str(tmp_path))
    code, out = _cli(tmp_path / "ws", str(tickets), "--reader", "ticket_reader:wrong_shape", "--json")
    assert code == 1
    reasons = {r["reason"] for r in json.loads(out)["rejected"]}
    assert reasons == {"reader ticket_reader:wrong_shape returned a dict; expected a ReadResult, a Unit or a "
                       "list of Unit"}
    code, out = _cli(tmp_path / "ws", str(tickets), "--reader", "ticket_reader:not_my_format", "--json")
    assert code == 1 and "no 'turns' in this file" in out
    for spec, reason in [("no_such_module:read", "cannot import 'no_such_module'"),
                         ("ticket_reader:nope", "has no attribute 'nope'"),
                         ("ticket_reader", "expected module:function"),
                         (f"{tmp_path / 'missing.py'}:read", "no such file"),
                         ("ticket_reader:json", "not a function")]:
        code, out = _cli(tmp_path / "ws3", str(tickets), "--reader", spec)
        assert code == 2 and reason in " ".join(out.split()), (spec, out)
    assert not (tmp_path / "ws3" / ".assay").exists()  # nothing read, no store left behind
    code, out = _cli(tmp_path / "ws3", str(tickets), "--reader", "ticket_reader:read", "--format", "tau-bench")
    assert code == 2 and "drop --format" in out
