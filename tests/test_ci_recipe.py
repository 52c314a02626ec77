"""The README's CI recipe works from git alone: its GitHub Actions workflow's ``run:`` commands (all but
``pip``, ``gh`` and the checkout) run, in order, with ``bash -eo pipefail`` as GitHub runs them, in a fresh
folder holding only what the repository would: ``assay.toml``, the evaluators, the ground-truth dataset
exported from a shared store, the main branch's baseline runs and a small agent. The judge is a real
OpenAI-compatible HTTP server on loopback that answers like a strict reviewer (fail when the timeline
shows an error). Calibration in the fresh store reproduces the shared store's report exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from assay._store import Store
from assay.annotations import Annotation, add_annotations, add_criterion
from assay.calibration import calibrate, export_dataset_file
from assay.calibration.calibrate import evaluator_record
from assay.evaluators import load_evaluator
from assay.models import make_judge
from assay.settings import load_settings
from assay.traces import read_file, render_timeline, step_timeline
from assay.traces.environment import Environment, with_environment
from tests.conftest import AIRLINE, ROOT

CRITERION = "tool-calls-valid"
JUDGE_EVALUATOR = f"""name: tool-calls-judged
kind: llm_judge
dimension: tool use
criterion: {{name: {CRITERION}, version: 1, text: "Every tool call is valid and succeeds."}}
judge: {{labels: {{pass: 1.0, fail: 0.0}}}}
threshold: 0.8
min_pass_rate: 0.5
"""
AGENT = '''"""A stand-in for the team's agent: runs each task and writes its trace as OTLP JSON."""
import argparse, hashlib, json

parser = argparse.ArgumentParser()
parser.add_argument("--tasks", required=True)
parser.add_argument("--out", required=True)
parser.add_argument("--variant", default="candidate")
args = parser.parse_args()


def h(text, n):
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def attrs(d):
    return [{"key": k, "value": {"stringValue": str(v)}} for k, v in d.items()]


spans = []
for task in json.load(open(args.tasks)):
    tid, root, t = h(args.variant + task, 32), h(args.variant + task + "root", 16), 1_760_000_000_000_000_000
    failed = task.endswith(("3", "7"))
    spans += [
        {"traceId": tid, "spanId": root, "name": "invoke_agent support", "startTimeUnixNano": str(t),
         "endTimeUnixNano": str(t + 9000), "attributes": attrs({"gen_ai.operation.name": "invoke_agent",
                                                               "dataset_item_id": task})},
        {"traceId": tid, "spanId": h(task + "chat", 16), "parentSpanId": root, "name": "chat",
         "startTimeUnixNano": str(t + 1000), "endTimeUnixNano": str(t + 2000),
         "attributes": attrs({"gen_ai.operation.name": "chat", "gen_ai.input.messages": json.dumps(
             [{"role": "user", "parts": [{"type": "text", "content": "Please cancel order " + task}]}]),
             "gen_ai.output.messages": json.dumps(
             [{"role": "assistant", "parts": [{"type": "text", "content": "Cancelling it."}]}])})},
        {"traceId": tid, "spanId": h(task + "tool", 16), "parentSpanId": root, "name": "execute_tool cancel",
         "startTimeUnixNano": str(t + 3000), "endTimeUnixNano": str(t + 4000),
         "status": {"code": 2, "message": "order not found"} if failed else {"code": 1},
         "attributes": attrs({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": "cancel",
                              "gen_ai.tool.call.arguments": json.dumps({"order": task}),
                              "gen_ai.tool.call.result": "Error: order not found" if failed else "cancelled"})}]
json.dump({"resourceSpans": [{"resource": {"attributes": attrs({"service.name": "support-agent"})},
                              "scopeSpans": [{"spans": spans}]}]}, open(args.out, "w"))
'''


class FakeJudge(BaseHTTPRequestHandler):
    """``POST /v1/chat/completions``: verdict ``fail`` when the prompt's timeline shows an ``[ERROR]`` step."""

    calls = 0

    def do_POST(self) -> None:  # noqa: N802 - the stdlib's name
        body = json.loads(self.rfile.read(int(self.headers["content-length"])))
        prompt = body["messages"][-1]["content"]
        timeline = prompt.split("<timeline>", 1)[-1].split("</timeline>", 1)[0]
        verdict = "fail" if "[ERROR]" in timeline else "pass"
        type(self).calls += 1
        reply = {"model": body["model"], "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": 12},
                 "choices": [{"message": {"role": "assistant", "content": json.dumps(
                     {"reason": "the timeline decides it", "verdict": verdict})}}]}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def judge_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def _recipe_steps() -> list[tuple[str, str]]:
    """``(step name, script)`` of the README workflow's ``run:`` steps, without pip and gh."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = text.split("# .github/workflows/assay-gate.yml", 1)[1].split("```", 1)[0]
    steps = [s for job in yaml.safe_load(block)["jobs"].values() for s in job["steps"] if "run" in s]
    return [(s.get("name", s["run"]), s["run"]) for s in steps
            if not s["run"].lstrip().startswith(("pip ", "gh "))]


def shared_store(path: Path, judge_url: str, repo: Path) -> dict[str, Any]:
    """The team's shared store: production runs labelled on the criterion, the judge evaluator calibrated;
    its dataset exported into the repository. Returns the calibration report (JSON)."""
    store = Store(f"sqlite:///{path}")
    units = [with_environment(u, Environment("production")) for u in read_file(AIRLINE).units
             if u.unit_id.endswith("/trial-0")][:30]
    store.add_units(units)
    add_criterion(store, "Every tool call is valid and succeeds.", name=CRITERION)
    add_annotations(store, [Annotation(
        unit_id=u.unit_id, annotator="ann-1", criterion=CRITERION,
        label="fail" if "[ERROR]" in render_timeline(step_timeline(u), max_chars=6000, skip_system=True) else "pass")
        for u in units])
    settings = load_settings(repo, env={"OPENAI_API_KEY": "sk-test"})
    defn = load_evaluator(repo / "evaluators" / "tool-calls-judged.yaml")
    report = calibrate(store, defn, make_judge(settings.judge, store), settings.judge, min_kappa=settings.min_kappa,
                       certification=settings.calibration)
    assert report.status == "active", report.notes
    export_dataset_file(store, CRITERION, repo / "datasets" / f"{CRITERION}.jsonl")
    store.close()
    return report.model_dump(mode="json", exclude={"run_id"})


def test_the_readme_ci_recipe_runs_from_git_alone(tmp_path: Path, judge_url: str) -> None:
    repo = tmp_path / "repo"
    (repo / "evaluators").mkdir(parents=True)
    (repo / "evals").mkdir()
    # 30 labels leave 9 in the test split (2 fail): too few for the lower bounds of the default certification
    # to reach 0.8, so this small repository certifies on point estimates, as a team starting out would
    (repo / "assay.toml").write_text(f'[judge]\nprovider = "openai"\nmodel = "fake-judge"\nbase_url = "{judge_url}"\n'
                                     '[calibration]\npolicy = "point"\n')
    (repo / "evaluators" / "tool-calls-judged.yaml").write_text(JUDGE_EVALUATOR)
    (repo / "evals" / "run_agent.py").write_text(AGENT)
    (repo / "evals" / "tasks.json").write_text(json.dumps([f"task-{i}" for i in range(10)]))
    subprocess.run([sys.executable, "evals/run_agent.py", "--tasks", "evals/tasks.json", "--out",
                    "evals/baseline.json", "--variant", "main"], cwd=repo, check=True)
    shared = shared_store(tmp_path / "shared.db", judge_url, repo)
    assert sorted(p.name for p in repo.rglob("*") if p.is_file()) == sorted(
        ["assay.toml", "tool-calls-judged.yaml", "run_agent.py", "tasks.json", "baseline.json", f"{CRITERION}.jsonl"])

    env = _ci_env(tmp_path)
    timings = []
    for name, script in _recipe_steps():
        started = time.perf_counter()
        done = subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=repo, env=env,
                              capture_output=True, text=True, timeout=600)
        timings.append((name, round(time.perf_counter() - started, 1)))
        assert done.returncode == 0, f"step {name!r} exited {done.returncode}\n{done.stdout}\n{done.stderr}"
    names = [n for n, _ in timings]
    assert names[-1] == "Gate" and len(names) == 4, names

    markdown = (repo / "gate.md").read_text()
    assert markdown.startswith("<!-- assay-gate -->") and "tool-calls-judged" in markdown
    junit = (repo / "gate.xml").read_text()
    assert 'name="tool-calls-judged"' in junit and "<failure" not in junit
    ci = Store(f"sqlite:///{repo / '.assay' / 'assay.db'}")
    try:
        assert sorted(ci.select_unit_ids("env:ci")) == sorted(ci.select_unit_ids("source:candidate.json")
                                                               + ci.select_unit_ids("source:baseline.json"))
        assert len(ci.select_unit_ids("env:ci")) == 20 and len(ci.select_unit_ids("env:production")) == 30
        record = evaluator_record(ci, load_evaluator(repo / "evaluators" / "tool-calls-judged.yaml"))
        assert record is not None and record.calibration is not None and record.status == "active"
        assert record.calibration.model_dump(mode="json", exclude={"run_id"}) == shared  # reproduced exactly
    finally:
        ci.close()
    # calibrated twice (shared store, CI store); the gate: 2 repeats of 10 prompts (a task reads the same on both
    # sides, so the judge cache answers the baseline)
    assert FakeJudge.calls >= 30 + 30 + 2 * 10


def _ci_env(tmp_path: Path) -> dict[str, str]:
    """The job's environment: ``assay`` and ``python`` on PATH (this checkout's sources), the judge's key."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, command in (("assay", f'"{sys.executable}" -m assay._cli "$@"'), ("python", f'"{sys.executable}" "$@"')):
        shim = bin_dir / name
        shim.write_text(f"#!/bin/sh\nexec {command}\n")
        shim.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASSAY_", "OPENAI_")) and k != "CI"}
    src = str(ROOT / "src")
    return {**env, "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}", "OPENAI_API_KEY": "sk-test",
            "PYTHONPATH": os.pathsep.join([src, str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
