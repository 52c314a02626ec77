"""Docs that cannot rot: the code blocks of README.md and docs/*.md are checked against the code.

* Every ``assay ...`` command written anywhere in the docs (shell blocks, the GitHub Actions YAML's
  ``run:`` steps, inline code in prose, synopses such as ``assay evaluators list | show NAME``) names a
  command that exists, with options that exist (and, for options with fixed choices, valid choices).
* Concrete shell lines (no placeholder in capitals, no ``[optional]`` part, no ``a|b`` alternatives) of
  the blocks not in :data:`SKIP_BLOCKS` run, in document order, against one temporary workspace of
  real tau-bench runs, whose evaluator is the README's own evaluator file; each must exit 0.
* TOML blocks parse and validate against :class:`assay.settings.Settings`, every key (also nested ones,
  which the model would otherwise ignore) a field; ``[section] key`` and ``setting `name``` in prose and
  every ``ASSAY_*`` variable name a setting or a CLI option's variable.
* Python blocks compile and their ``assay`` imports exist (not run: a doc's own test may run them).
* Evaluator YAML blocks load as evaluator files (``assay.evaluators.load_evaluator``) and their code
  check imports; YAML blocks that are trace mappings, and the ``docs/mappings/*.yaml`` files (each one the
  docs name must exist), follow the shipped mapping JSON Schema and load (``assay.traces.mapping``); the
  workflow YAML parses and its ``run:`` steps pass the command check.
* HTTP paths in the docs (``/v1/traces``, ``/api/v1/...``, ``/audit`` ...) are routes of the app, and
  Python names (``assay.traces.ingest_paths``, ``assay.suite.audit.audit_pairs`` ...) import.

A block is skipped only when it is listed in :data:`SKIP_BLOCKS` with the reason; an untagged block
(a diagram, a folder layout) must be listed there too, so no new block goes unchecked silently.
"""

from __future__ import annotations

import ast
import enum
import importlib
import json
import re
import shlex
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from assay._cli.main import app
from assay.evaluators import load_evaluator
from assay.settings import Settings
from assay.traces.otlp import decode_logs

from .conftest import AIRLINE, ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SKIP_BLOCKS: dict[tuple[str, str], str] = {
    ("README.md", "make demo"): "the whole loop on real data takes minutes (tests/test_demo.py runs it); "
                                "make test runs this suite",
    ("README.md", "pip install torch==2.13.0"): "installs packages from the network",
    ("README.md", "assay serve --port 4318 &"): "starts a server and the reader's own app "
                                                "(tests/test_receiver_live.py runs the receiver)",
    ("README.md", 'curl -H "Authorization: Bearer $KEY"'): "needs a running server and an API key "
                                                           "(tests/test_web_api.py; its paths are checked here)",
    ("README.md", "assay.toml          settings (below)"): "not code: the files of a workspace",
    ("README.md", '{"unit": "tau-airline/task-3/trial-0", "annotator": "ann", "criterion": "grade"'):
        "label records of each scale; tests/test_annotations.py imports records like them",
    ("README.md", "# .github/workflows/assay-gate.yml"): "a GitHub Actions workflow: parsed, its commands "
                                                         "checked, not run",
    ("docs/deploy.md", "OTLP/HTTP + annotation app + REST API"): "not code: a deployment diagram",
    ("docs/deploy.md", "# on the head machine and each worker machine"): "starts a Ray cluster on several machines",
    ("docs/deploy.md", "ray start --head --port=6379 --node-ip-address=127.0.0.2"): "starts a Ray cluster "
                                                                                    "(tests/test_ray_executor.py)",
}
NEVER_RUN = {"serve": "starts a server", "demo": "the whole loop: minutes (tests/test_demo.py)",
             "doctor": "loads both models (tests/test_doctor.py)", "worker": "runs until Ctrl-C without --once"}
"""Commands a concrete line in a checked block may name without being run, and why."""
EXTRA_ENV = {"ASSAY_DEBUG": "keeps tracebacks (assay._cli._common.handle_errors)"}
"""``ASSAY_*`` variables that are neither settings nor CLI options."""
_PLACEHOLDER = re.compile(r"\b[A-Z][A-Z0-9_]{1,}\b|\.\.\.|\[|\]|\w\|\w")
_SHELL = {"sh", "bash", "shell", "console"}


# --- reading the docs ---------------------------------------------------------------------
@dataclass(frozen=True)
class Block:
    """One fenced code block: its document, first line number, language tag and text."""

    doc: str
    line: int
    lang: str
    text: str

    @property
    def skip_reason(self) -> str | None:
        return next((reason for (doc, start), reason in SKIP_BLOCKS.items()
                     if doc == self.doc and self.text.lstrip().startswith(start)), None)


def _blocks() -> list[Block]:
    out = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for m in re.finditer(r"^```([\w-]*)\n(.*?)^```", text, flags=re.S | re.M):
            out.append(Block(path.relative_to(ROOT).as_posix(), text[:m.start()].count("\n") + 1, m.group(1),
                             m.group(2)))
    return out


BLOCKS = _blocks()


def _prose(path: Path) -> str:
    """The document without its fenced blocks."""
    return re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)


def _inline_code(path: Path) -> list[str]:
    return [" ".join(m.split()) for m in re.findall(r"`([^`]+)`", _prose(path))]


def _shell_lines(text: str) -> list[str]:
    """Logical lines: ``\\`` continuations and indented continuation lines joined, comments removed."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        if lines and (lines[-1].endswith("\\") or (raw[:1].isspace() and line.strip())):
            lines[-1] = lines[-1].removesuffix("\\").rstrip() + " " + line.strip()
        elif line.strip():
            lines.append(line.strip())
    return lines


def _invocations(line: str) -> list[str]:
    """What follows each ``assay`` command word in a shell line (up to ``;``, ``&&`` or the end)."""
    found = []
    for m in re.finditer(r"(?:^|[;&(]\s*|\bdo\s+|\bthen\s+|\s)assay\s+(.*)", line):
        found.append(re.split(r"\s*(?:;|&&|\|\|)\s*", m.group(1))[0].strip().rstrip("&").strip())
    return found


# --- the command check ----------------------------------------------------------------------
ROOT_CMD = typer.main.get_command(app)


def _opts(cmd: Any) -> dict[str, Any]:
    return {opt: p for p in cmd.params for opt in (*p.opts, *p.secondary_opts) if opt.startswith("-")}


def _tokens(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def _resolve(tokens: list[str]) -> tuple[list[str], Any, int]:
    """Walk the command tree: ``(path, command, index of the first token after the path)``."""
    cmd, path, i = ROOT_CMD, [], 0
    root_opts = _opts(ROOT_CMD)
    while i < len(tokens):
        word = tokens[i].strip("[]")
        if word in root_opts and not path:
            i += 2
            continue
        sub = getattr(cmd, "commands", {}).get(word)
        if sub is None:
            break
        cmd, path, i = sub, [*path, word], i + 1
    return path, cmd, i


def check_command(text: str) -> list[str]:
    """Problems of one ``assay`` invocation (the text after ``assay``); ``a | b`` alternatives of sibling
    commands (``evaluators list | show NAME``) are checked each."""
    segments = re.split(r"\s+\|\s+", text)
    path, cmd, problems = _check_one(_tokens(segments[0]))
    for segment in segments[1:]:
        parent = path[:-1] if not getattr(cmd, "commands", None) else path
        first = (_tokens(segment) or [""])[0]
        if first not in getattr(_resolve(parent)[1], "commands", {}):
            break  # a real shell pipe: the rest is another program
        problems += _check_one([*parent, *_tokens(segment)])[2]
    return problems


def _check_one(tokens: list[str]) -> tuple[list[str], Any, list[str]]:
    path, cmd, i = _resolve(tokens)
    where = "assay " + " ".join(path)
    problems = []
    rest = tokens[i:]
    if getattr(cmd, "commands", None) and rest and re.fullmatch(r"[a-z][\w-]*", rest[0]):
        problems.append(f"{where}: no command {rest[0]!r}")
    opts = _opts(cmd) | _opts(ROOT_CMD)
    for n, token in enumerate(rest):
        name = token.strip("[]").split("=", 1)[0]
        if not re.fullmatch(r"--?[A-Za-z][\w-]*", name):
            continue
        if name not in opts:
            problems.append(f"{where}: no option {name}")
        elif n + 1 < len(rest) and "|" in rest[n + 1] and (choices := _choices(opts[name])) is not None:
            bad = [c for c in rest[n + 1].strip("[]").split("|") if c not in ("...", *choices)]
            problems += [f"{where} {name}: no choice {c!r}" for c in bad]
    return path, cmd, problems


def _choices(param: Any) -> list[str] | None:
    """The fixed values of an option (an Enum or Literal annotation, or a click Choice), else None."""
    if hasattr(getattr(param, "type", None), "choices"):
        return list(param.type.choices)
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [str(e.value) for e in annotation]
    if typing.get_origin(annotation) is typing.Literal:
        return [str(a) for a in typing.get_args(annotation)]
    return None


def _documented_commands() -> Iterator[tuple[str, str]]:
    """``(where, invocation)`` for every ``assay`` command in the docs."""
    for b in BLOCKS:
        lines = _workflow_runs(b.text) if b.lang == "yaml" and "jobs:" in b.text else (
            _shell_lines(b.text) if b.lang in _SHELL else [])
        for line in lines:
            for inv in _invocations(line):
                yield f"{b.doc}:{b.line}", inv
    for path in DOCS:
        for code in _inline_code(path):
            if code.startswith("assay "):
                yield path.name, code.removeprefix("assay ")


def _workflow_runs(text: str) -> list[str]:
    steps = [s for job in yaml.safe_load(text)["jobs"].values() for s in job["steps"]]
    return [line for s in steps if "run" in s for line in _shell_lines(s["run"])]


def test_every_documented_command_and_option_exists() -> None:
    found = list(_documented_commands())
    assert len(found) > 40  # the checker sees the docs' commands at all
    problems = [f"{where}: {p}" for where, inv in found for p in check_command(inv)]
    assert problems == []


@pytest.mark.parametrize("text, problem", [
    ("gate --candiate all", "assay gate: no option --candiate"),
    ("evaluators list | shw NAME", None),  # not a sibling command: read as a shell pipe
    ("evaluators lst", "assay evaluators: no command 'lst'"),
    ("drift [--window day|fortnight]", "assay drift --window: no choice 'fortnight'"),
    ("keys create | list | revoke PREFIX --all", "assay keys revoke: no option --all"),
])
def test_the_command_check_can_fail(text: str, problem: str | None) -> None:
    assert check_command(text) == ([problem] if problem else [])


# --- settings -------------------------------------------------------------------------------
def unknown_keys(data: dict[str, Any], model: type[BaseModel] = Settings, prefix: str = "") -> list[str]:
    """Keys of ``data`` that are no field of ``model`` (recursively into nested settings models)."""
    out = []
    for key, value in data.items():
        field = model.model_fields.get(key)
        if field is None:
            out.append(prefix + key)
        elif isinstance(value, dict) and isinstance(field.annotation, type) and issubclass(field.annotation,
                                                                                          BaseModel):
            out += unknown_keys(value, field.annotation, f"{prefix}{key}.")
    return out


def _nested(path: list[str], model: type[BaseModel] = Settings) -> bool:
    field = model.model_fields.get(path[0])
    if field is None:
        return False
    if len(path) == 1:
        return True
    return isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel) and _nested(
        path[1:], field.annotation)


def _cli_envvars() -> set[str]:
    out: set[str] = set()

    def walk(cmd: Any) -> None:
        for p in cmd.params:
            out.update([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])
        for sub in getattr(cmd, "commands", {}).values():
            walk(sub)

    walk(ROOT_CMD)
    return out


def env_problem(name: str) -> str | None:
    """None when ``ASSAY_...`` is a setting (``ASSAY_JUDGE__MODEL``), a CLI option's variable or in
    :data:`EXTRA_ENV`; else what is wrong."""
    if name in _cli_envvars() or name in EXTRA_ENV or name in ("ASSAY_EXECUTOR", "ASSAY_RAY_ADDRESS"):
        return None
    if _nested(name.removeprefix("ASSAY_").lower().split("__")):
        return None
    return f"{name} is no setting and no option's variable"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "toml"], ids=lambda b: f"{b.doc}:{b.line}")
def test_toml_blocks_are_valid_settings(block: Block, tmp_path: Path) -> None:
    data = tomllib.loads(block.text)
    assert unknown_keys(data) == []
    Settings.model_validate({**data, "workspace": tmp_path})


def test_settings_and_variables_named_in_prose_exist() -> None:
    names = set()
    for path in DOCS:
        for code in _inline_code(path):
            if m := re.fullmatch(r"\\?\[(\w+)\] (\w+)( = .*)?", code):
                names.add(f"{m.group(1)}.{m.group(2)}")
        names.update(m for m in re.findall(r"setting `(\w+)`", _prose(path)))
    assert {"online.settle_s", "drift.run_kinds", "gate_alpha", "executor.kind"} <= names  # the search works
    assert [n for n in sorted(names) if not _nested(n.split("."))] == []
    variables = {v for path in DOCS for v in re.findall(r"\bASSAY_[A-Z0-9_]*[A-Z0-9]", path.read_text())}
    assert {"ASSAY_JUDGE__MODEL", "ASSAY_WORKSPACE", "ASSAY_SESSION_SECRET"} <= variables
    assert [p for v in sorted(variables) if (p := env_problem(v))] == []


def test_the_settings_checks_can_fail() -> None:
    assert unknown_keys({"store_url": "x", "judge": {"modle": "m"}, "gate_marjin": 0.1}) == ["judge.modle",
                                                                                           "gate_marjin"]
    assert not _nested(["online", "settle"]) and _nested(["online", "settle_s"])
    assert env_problem("ASSAY_JUDGE__MODLE") and env_problem("ASSAY_GATE_ALPHA") is None  # a CLI option's


# --- Python names ---------------------------------------------------------------------------------
def resolves(dotted: str) -> bool:
    """True when ``assay.x.y`` is a module, or an attribute of the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: Any = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def _source_names() -> set[str]:
    """Dotted ``assay.*`` strings written in the source: entry-point groups (``assay.detectors``) and the like."""
    src = Path(importlib.import_module("assay").__file__ or "").parent
    return {node.value for path in src.rglob("*.py") for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
            if isinstance(node, ast.Constant) and isinstance(node.value, str)
            and re.fullmatch(r"assay(\.\w+)+", node.value)}


def test_python_names_in_the_docs_exist() -> None:
    names = {m.group(1) for path in DOCS for code in _inline_code(path)
             if (m := re.match(r"(assay(?:\.\w+)+)", code)) and m.group(1) != "assay.toml"}
    assert "assay.traces.ingest_paths" in names
    known = _source_names()
    assert [n for n in sorted(names) if not resolves(n) and n not in known] == []
    assert not resolves("assay.traces.ingest_path") and not resolves("assay.suite.no_such_module")


def import_problems(code: str) -> list[str]:
    """``from assay... import name`` / ``import assay...`` statements of a Python example that fail."""
    problems = []
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "assay":
            problems += [f"{node.module}.{a.name}" for a in node.names if not resolves(f"{node.module}.{a.name}")]
        elif isinstance(node, ast.Import):
            problems += [a.name for a in node.names if a.name.split(".")[0] == "assay" and not resolves(a.name)]
    return problems


def test_python_blocks_parse_and_import_what_exists() -> None:
    """Python examples compile and name only what exists (a doc's own test may run them; here they are
    not run, so no example needs a workspace)."""
    for b in [b for b in BLOCKS if b.lang == "python"]:
        assert import_problems(b.text) == [], f"{b.doc}:{b.line}"
    assert import_problems("from assay.traces import ingest_paths, ingest_pathz\nimport assay.nope") == [
        "assay.traces.ingest_pathz", "assay.nope"]


# --- evaluator files, trace mappings and the workflow ------------------------------------------
def is_mapping(text: str) -> bool:
    """A YAML block that is a trace mapping (``assay ingest --mapping``): it has ``messages`` and no
    evaluator ``criterion``."""
    data = yaml.safe_load(text)
    return isinstance(data, dict) and "messages" in data and "criterion" not in data


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "yaml" and "jobs:" not in b.text
                                   and not is_mapping(b.text)], ids=lambda b: f"{b.doc}:{b.line}")
def test_evaluator_yaml_blocks_load(block: Block, tmp_path: Path) -> None:
    path = tmp_path / "evaluator.yaml"
    path.write_text(block.text, encoding="utf-8")
    defn = load_evaluator(path)
    if (code := defn.code_spec()) is not None:  # kinds without a code part (llm_judge, external) have none
        module, _, name = code.callable.partition(":")
        assert callable(getattr(importlib.import_module(module), name))


def mapping_problems(data: object) -> list[str]:
    """Why a mapping does not follow the shipped JSON Schema or does not load (empty when it does)."""
    import jsonschema

    from assay.exceptions import ConfigError
    from assay.traces.mapping import parse_mapping

    schema = json.loads(resources.files("assay.traces.mapping").joinpath("mapping.schema.json").read_text())
    problems = [f"schema: {e.message}" for e in jsonschema.Draft202012Validator(schema).iter_errors(data)]
    try:
        parse_mapping(data)
    except ConfigError as exc:
        problems.append(str(exc))
    return problems


def _mapping_files() -> list[Path]:
    """Every ``docs/mappings/*.yaml`` file, and every such path the docs name (which must exist)."""
    named = {ROOT / m for path in DOCS for m in re.findall(r"docs/mappings/[\w.-]+\.yaml", path.read_text())}
    named |= {ROOT / "docs" / m for m in re.findall(r"\]\((mappings/[\w.-]+\.yaml)\)",
                                                     (ROOT / "docs" / "mappings.md").read_text())}
    return sorted(named | set((ROOT / "docs" / "mappings").glob("*.yaml")))


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang == "yaml" and is_mapping(b.text)],
                         ids=lambda b: f"{b.doc}:{b.line}")
def test_mapping_yaml_blocks_follow_the_schema(block: Block) -> None:
    assert mapping_problems(yaml.safe_load(block.text)) == []


def test_mapping_files_exist_and_follow_the_schema() -> None:
    files = _mapping_files()
    assert len(files) >= 2 and any(b.lang == "yaml" and is_mapping(b.text) for b in BLOCKS)  # checks see them
    assert [str(f) for f in files if not f.is_file()] == []
    assert {f.name: mapping_problems(yaml.safe_load(f.read_text())) for f in files} == {f.name: [] for f in files}
    assert mapping_problems({"name": "x", "messages": [{"role": "narrator"}]})  # the check can fail


def test_the_workflow_parses_and_gates() -> None:
    (block,) = [b for b in BLOCKS if b.lang == "yaml" and "jobs:" in b.text]
    runs = " ".join(_workflow_runs(block.text))
    assert "assay gate --candidate" in runs and "--junit gate.xml" in runs


# --- HTTP paths ---------------------------------------------------------------------------------
def _served(paths: set[str], tmp_path: Path) -> dict[str, int]:
    """``{path: status}`` of a GET on the real app (a route answers anything but 404: 200, 303 to the
    login, 401 without a key, 405 for a POST-only route); ``{...}`` parameters are filled with ``x``."""
    from starlette.testclient import TestClient

    from assay._store import Store
    from assay._web.app import create_app

    store = Store(f"sqlite:///{tmp_path / 'routes.db'}")
    client = TestClient(create_app(Settings(workspace=tmp_path), store), follow_redirects=False)
    status = {p: client.get(re.sub(r"\{\w+\}", "x", p)).status_code for p in paths}
    for p in [p for p, code in status.items() if code == 404]:  # a mounted app's root: its schema is served
        status[p] = client.get(p.rstrip("/") + "/openapi.json").status_code
    store.close()
    return status


def test_documented_http_paths_are_routes(tmp_path: Path) -> None:
    text = "\n".join(p.read_text(encoding="utf-8") for p in DOCS)
    found = re.findall(r"(?<![\w.:/])/(?:api/v1|v1|audit|dashboard)[\w/{}.-]*", text)
    found += re.findall(r"http://127\.0\.0\.1:\d+(/[\w/{}.-]*)", text)  # the examples' own server
    documented = {m.rstrip(".,)") for m in found}
    assert {"/v1/traces", "/api/v1/signatures", "/audit", "/dashboard"} <= documented
    status = _served(documented | {"/api/v1/no-such-thing"}, tmp_path)
    assert status.pop("/api/v1/no-such-thing") == 404  # the check can fail
    assert {p: code for p, code in status.items() if code == 404} == {}


# --- running the concrete lines ------------------------------------------------------------------
def _concrete_lines() -> list[tuple[Block, str]]:
    """The lines to run: concrete ``assay`` lines of checked shell blocks, in document order."""
    out = []
    for b in BLOCKS:
        if b.lang not in _SHELL or b.skip_reason:
            continue
        for line in _shell_lines(b.text):
            assert line.startswith("assay "), f"{b.doc}:{b.line}: decide how to check {line!r} (SKIP_BLOCKS)"
            command = _resolve(_tokens(line.removeprefix("assay ")))[0][:1]
            if not _PLACEHOLDER.search(line) and not set(command) & set(NEVER_RUN):
                out.append((b, line))
    return out


def test_every_block_is_checked_or_skipped_with_a_reason() -> None:
    for b in BLOCKS:
        assert b.lang in (*_SHELL, "toml", "yaml", "python") or b.skip_reason, f"{b.doc}:{b.line}: not checked"
    assert all(any(b.skip_reason == reason for b in BLOCKS) for reason in SKIP_BLOCKS.values()), "stale SKIP_BLOCKS"
    ran = [line for _, line in _concrete_lines()]
    assert "assay labels import labels.jsonl" in ran and "assay drift" in ran


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real airline runs (trial 0), labels on the README evaluator's criterion, that evaluator file
    calibrated and backfilled, so the documented commands have something to show."""
    ws = tmp_path_factory.mktemp("docs")
    runs = [r for r in json.loads(AIRLINE.read_text()) if r["trial"] == 0][:30]
    (ws / "runs.json").write_text(json.dumps(runs))
    evaluator = next(b for b in BLOCKS if b.doc == "README.md" and b.lang == "yaml" and "jobs:" not in b.text)
    (ws / "evaluators").mkdir()
    (ws / "evaluators" / "readme.yaml").write_text(evaluator.text, encoding="utf-8")
    defn = load_evaluator(ws / "evaluators" / "readme.yaml")
    labels = [{"unit": f"tau-airline/task-{r['task_id']}/trial-0", "annotator": "ann-1",
               "criterion": defn.criterion.name, "label": "fail" if _tool_error(r) else "pass"} for r in runs]
    (ws / "labels.jsonl").write_text("".join(json.dumps(x) + "\n" for x in labels))
    for args in (["ingest", str(ws / "runs.json")],
                 ["criteria", "add", "0", defn.criterion.text, "--name", defn.criterion.name],
                 ["labels", "import", str(ws / "labels.jsonl")], ["calibrate", defn.name, "--force", "docs test"],
                 ["score", "--evaluator", defn.name, "--units", "all"]):
        result = CliRunner().invoke(app, ["--workspace", str(ws), *args])
        assert result.exit_code == 0, (args, result.output)
    return ws


def _tool_error(run: dict[str, Any]) -> bool:
    return any(m["role"] == "tool" and str(m["content"]).startswith("Error") for m in run["traj"])


def test_concrete_lines_run(workspace: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(workspace)
    for block, line in _concrete_lines():
        result = CliRunner().invoke(app, _tokens(line.removeprefix("assay ")))
        assert result.exit_code == 0, f"{block.doc}:{block.line}: {line}\n{result.output}"
    assert (workspace / "report.html").stat().st_size > 10_000
    (line,) = (workspace / "scores.jsonl").read_text().splitlines()
    events = [event for _, _, event in decode_logs(line.encode(), "json").items]  # the receiver reads them back
    assert len({e.attributes["assay.unit.id"] for e in events}) == 30  # every unit scored, with its lineage
