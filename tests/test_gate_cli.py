"""``assay gate`` end to end on a real SQLite workspace with real tau-bench airline runs.

The 200 runs are 4 trials of 50 tasks; split into one file per trial they are four replays of
one dataset, so trial 1 against trial 0 is a paired comparison by the ``task_id`` item key.
Every exit code (0, 1, 2, 3) is produced for real; one test runs the real local judge.
"""

from __future__ import annotations

import json
import random
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scipy import stats
from sqlalchemy import func, select
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store.store import Store
from assay._store.tables import JudgeCacheRow, ScoreRow
from assay.calibration.calibrate import save_evaluator_record
from assay.evaluators import EvaluatorDef, content_version, save_evaluator
from assay.settings import load_settings
from assay.suite.gate_output import MARKDOWN_MARKER
from assay.traces import Step, Unit

from .conftest import AIRLINE

runner = CliRunner()
CRITERION: dict[str, Any] = {"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."}
REWARD_SPLIT = "[signals]\nfail_at = 1.0\nambiguous_high = 1.0\n"
"""These tests pin the gate's statistics on the benchmark's own split: with fail_at 1.0 only a signal of
strength 1, the recorded outcome, fails a unit, so ``failed`` / ``passed`` are reward 0 / reward 1 (the
labels and evaluator fails the tests write are signals too, weaker than 1)."""


def _run(ws: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = runner.invoke(app, ["--workspace", str(ws), *args], env=env)
    return result.exit_code, result.stdout if "--json" in args else result.output


def _tool_error(run: dict[str, Any]) -> bool:
    return any(m["role"] == "tool" and str(m["content"]).startswith("Error") for m in run["traj"])


def crashes_on_some_units(steps: list[Step], unit: Unit) -> tuple[float, str]:
    """A buggy check: raises on every fifth task (as a check with an unhandled case would)."""
    if int(unit.attributes["task_id"]) % 5 == 0:
        raise RuntimeError(f"unhandled case in task {unit.attributes['task_id']}")
    return 1.0, "ok"


_COIN = random.Random(0)


def coin_flip(steps: list[Step], unit: Unit) -> tuple[float, str]:
    """A flaky check: its verdict does not depend on the unit at all."""
    return (1.0, "heads") if _COIN.random() < 0.5 else (0.0, "tails")


TEST_HEAVY = "0.2,0.2,0.6"
"""train,dev,test shares that put enough human fails in the test split for the lower bounds to clear."""


def _code_evaluator(name: str, callable_: str, min_pass_rate: float = 0.5) -> EvaluatorDef:
    return EvaluatorDef(name=name, kind="code", dimension="tool use", criterion=CRITERION,
                        code={"callable": callable_}, min_pass_rate=min_pass_rate)


def _activate(ws: Path, defn: EvaluatorDef) -> Path:
    """Write the evaluator file and record its version as active (an explicit, recorded override)."""
    path = save_evaluator(defn, ws / "evaluators" / f"{defn.name}.yaml")
    store = Store(load_settings(ws).resolved_store_url())
    save_evaluator_record(store, defn, "active", None, override_reason="gate test")
    store.close()
    return path


@pytest.fixture(scope="module")
def raw_runs() -> list[dict[str, Any]]:
    return json.loads(AIRLINE.read_text())


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, raw_runs: list[dict[str, Any]]) -> Iterator[Path]:
    """Four trial files ingested, labels, and a calibrated (active) code evaluator."""
    ws = tmp_path_factory.mktemp("gate")
    (ws / "assay.toml").write_text(REWARD_SPLIT)
    for trial in range(4):
        (ws / f"trial-{trial}.json").write_text(json.dumps([r for r in raw_runs if r["trial"] == trial]))
    code, out = _run(ws, "ingest", *(str(ws / f"trial-{t}.json") for t in range(4)))
    assert code == 0 and "200 new" in out, out
    code, out = _run(ws, "criteria", "add", "0", CRITERION["text"], "--name", "tool-ok")
    assert code == 0, out
    lines = [json.dumps({"unit": f"tau-airline/task-{r['task_id']}/trial-{r['trial']}", "annotator": "ann-1",
                         "criterion": "tool-ok", "label": "fail" if _tool_error(r) else "pass"}) for r in raw_runs]
    (ws / "labels.jsonl").write_text("\n".join(lines) + "\n")
    code, out = _run(ws, "labels", "import", str(ws / "labels.jsonl"))
    assert code == 0, out
    save_evaluator(_code_evaluator("no-tool-errors", "assay.evaluators.checks:no_tool_errors"),
                   ws / "evaluators" / "no-tool-errors.yaml")
    # 36 human fails: a 60% test split holds 22 of them, enough for the TNR lower bound to clear 0.80
    code, out = _run(ws, "calibrate", "no-tool-errors", "--split", TEST_HEAVY, "--json")
    assert code == 0 and json.loads(out)["status"] == "active", out
    yield ws


def _calibrated_dataset_version(ws: Path) -> int:
    code, out = _run(ws, "calibrate", "no-tool-errors", "--split", TEST_HEAVY, "--json")
    assert code == 0
    return int(json.loads(out)["dataset_version"])


def test_paired_replay_uses_mcnemar_and_writes_junit_and_markdown(ws: Path, raw_runs: list[dict[str, Any]]) -> None:
    by_trial = {t: {r["task_id"]: not _tool_error(r) for r in raw_runs if r["trial"] == t} for t in (0, 1)}
    cand_only = sum(by_trial[1][k] and not by_trial[0][k] for k in by_trial[0])
    base_only = sum(by_trial[0][k] and not by_trial[1][k] for k in by_trial[0])
    p_value = stats.binomtest(cand_only, cand_only + base_only).pvalue
    diff = (cand_only - base_only) / 50
    cand_rate = sum(by_trial[1].values()) / 50
    expected = 1 if (p_value < 0.05 and diff < -0.05) or cand_rate < 0.5 else 0

    junit, md = ws / "out" / "gate.xml", ws / "out" / "gate.md"
    code, out = _run(ws, "gate", "--candidate", "source:trial-1.json", "--baseline", "source:trial-0.json",
                     "--junit", str(junit), "--markdown", str(md), "--json")
    assert code == expected, out
    report = json.loads(out)
    assert report["exit_code"] == expected and report["baseline_kind"] == "selection"
    assert report["pairing"] == {"key": "item", "attribute": "task_id", "n_pairs": 50, "n_candidate": 50,
                                 "n_baseline": 50}
    item = report["items"][0]
    cmp = item["comparison"]
    assert cmp["method"] == "mcnemar-exact" and cmp["n_pairs"] == 50
    assert (cmp["candidate_only_pass"], cmp["baseline_only_pass"]) == (cand_only, base_only)
    assert cmp["p_value"] == pytest.approx(p_value) and cmp["diff"] == pytest.approx(diff)
    assert cmp["ci_low"] <= diff <= cmp["ci_high"]
    assert item["score_comparison"]["method"] == "paired-bootstrap"
    # lineage: evaluator version, judge model (none for code), ground-truth dataset version, run ids
    assert item["evaluator_version"] == content_version(
        _code_evaluator("no-tool-errors", "assay.evaluators.checks:no_tool_errors"))
    assert item["judge_model"] is None and item["dataset_version"] == _calibrated_dataset_version(ws)
    assert item["baseline_evaluator_version"] == item["evaluator_version"]
    assert report["run_id"].startswith("gate-") and report["baseline_run"].startswith("gate-")
    assert report["run_id"] != report["baseline_run"]

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("tests") == "1" and suite.get("failures") == str(expected)
    props = {p.get("name"): p.get("value") for p in suite.iter("property")}
    assert props["run_id"] == report["run_id"] and props["pairing"] == "item"
    (case,) = suite.findall("testcase")
    assert case.get("name") == "no-tool-errors"
    assert (case.find("failure") is not None) == (expected == 1)
    assert f"p={p_value:.3g}" in (case.findtext("system-out") or "")

    text = md.read_text()
    assert text.startswith(MARKDOWN_MARKER)
    assert "paired by item attribute 'task_id' (50 of 50 candidate units matched)" in text
    assert f"| `no-tool-errors` | {cand_rate:.3f} (50) |" in text
    assert f"{diff:+.3f}" in text and report["run_id"] in text
    assert ("✅ assay gate: pass" in text) == (expected == 0)


def test_significant_unpaired_regression_exits_1(ws: Path, raw_runs: list[dict[str, Any]]) -> None:
    failed = [not _tool_error(r) for r in raw_runs if r["reward"] == 0.0]
    passed = [not _tool_error(r) for r in raw_runs if r["reward"] == 1.0]
    table = [[sum(failed), len(failed) - sum(failed)], [sum(passed), len(passed) - sum(passed)]]
    p_value = stats.fisher_exact(table).pvalue
    diff = sum(failed) / len(failed) - sum(passed) / len(passed)
    assert p_value < 0.05 and diff < -0.05  # the data: runs that failed the task also hit more tool errors

    md = ws / "regression.md"
    code, out = _run(ws, "gate", "--candidate", "failed", "--baseline", "passed", "--json", "--markdown", str(md))
    assert code == 1, out
    item = json.loads(out)["items"][0]
    assert item["failures"] == ["regression"] and not item["passed"]
    assert item["comparison"]["method"] == "fisher-exact" and json.loads(out)["pairing"]["key"] == "none"
    assert item["comparison"]["p_value"] == pytest.approx(p_value)
    assert item["comparison"]["diff"] == pytest.approx(diff)
    assert "significant regression" in item["reasons"][0] and "95% CI" in item["reasons"][0]
    text = md.read_text()
    assert "❌ regression" in text and "### Why it failed" in text and "independent samples" in text

    # the same drop is not significant at alpha 0.01: flag or setting
    code, out = _run(ws, "gate", "--candidate", "failed", "--baseline", "passed", "--alpha", "0.01", "--json")
    assert code == 0, out
    assert "not a regression" in json.loads(out)["items"][0]["notes"][0]
    (ws / "assay.toml").write_text("gate_alpha = 0.01\n" + REWARD_SPLIT)
    try:
        code, out = _run(ws, "gate", "--candidate", "failed", "--baseline", "passed", "--json")
        assert code == 0 and json.loads(out)["alpha"] == 0.01, out
    finally:
        (ws / "assay.toml").write_text(REWARD_SPLIT)

    code, out = _run(ws, "gate", "--candidate", "failed", "--baseline", "passed")
    assert code == 1 and "gate: FAIL" in out and "regression" in out


def test_units_alias_and_baseline_run_id(ws: Path) -> None:
    code, out = _run(ws, "gate", "--units", "source:trial-2.json", "--json")
    assert code == 0, out
    first = json.loads(out)
    assert first["candidate"] == "source:trial-2.json" and first["units"] == 50 and first["baseline"] is None
    code, out = _run(ws, "gate", "--candidate", "source:trial-2.json", "--baseline", first["run_id"], "--json")
    assert code == 0, out
    second = json.loads(out)
    assert second["baseline_kind"] == "run" and second["baseline_run"] == first["run_id"]
    assert second["pairing"]["key"] == "unit"
    assert second["items"][0]["comparison"]["p_value"] == 1.0
    assert second["items"][0]["pass_rate"] == first["items"][0]["pass_rate"]


@pytest.mark.parametrize("args", [
    ("--baseline", "nosuch:thing"),
    ("--baseline", "prefix:nothing-starts-like-this"),
    ("--alpha", "1.5"),
    ("--max-unscored", "-0.1"),
    ("--repeat", "0"),
    ("--pair-by", "bogus"),
    ("--candidate", "source:trial-1.json", "--baseline", "source:trial-0.json", "--pair-by", "content"),
])
def test_usage_errors_exit_2(ws: Path, args: tuple[str, ...]) -> None:
    code, out = _run(ws, "gate", *args)
    assert code == 2, out


def test_too_many_evaluator_errors_exit_3_and_redundancy(ws: Path) -> None:
    crashing = _activate(ws, _code_evaluator("crash-prone", "tests.test_gate_cli:crashes_on_some_units"))
    copy = _activate(ws, _code_evaluator("no-tool-errors-copy", "assay.evaluators.checks:no_tool_errors"))
    junit = ws / "errors.xml"
    try:
        code, out = _run(ws, "gate", "--json", "--junit", str(junit))
        assert code == 3, out
        report = json.loads(out)
        items = {i["evaluator"]: i for i in report["items"]}
        crash = items["crash-prone"]
        assert crash["n_errors"] == 40 and crash["error_share"] == pytest.approx(0.2)
        assert crash["failures"] == ["errors"]
        assert items["no-tool-errors"]["passed"] and items["no-tool-errors-copy"]["passed"]
        assert report["exit_meaning"].startswith("too many evaluator errors")
        # the two evaluators running the same check correlate perfectly and are flagged
        (pair,) = report["redundant"]
        assert {pair["evaluator_a"], pair["evaluator_b"]} == {"no-tool-errors", "no-tool-errors-copy"}
        assert pair["r"] == pytest.approx(1.0) and pair["n_units"] == 200
        cases = {c.get("name"): c for c in ET.parse(junit).getroot().iter("testcase")}
        assert cases["crash-prone"].find("error") is not None and cases["no-tool-errors"].find("error") is None
        message = cases["crash-prone"].find("error").get("message") or ""  # type: ignore[union-attr]
        assert "40 errors of 200 (20.0%; tolerance 10.0%)" in message and "unhandled case in task" in message
        code, out = _run(ws, "gate")
        assert code == 3 and "redundant?" in out and "exit 3" in out
        # a 25% tolerance lets 20% errors through
        code, out = _run(ws, "gate", "--max-unscored", "0.25", "--json")
        assert code == 0, out
    finally:
        crashing.unlink()
        copy.unlink()


def test_repeat_lists_flaky_units_in_every_output(ws: Path) -> None:
    flaky_check = _activate(ws, _code_evaluator("coin-flip", "tests.test_gate_cli:coin_flip", min_pass_rate=0.0))
    junit, md = ws / "flaky.xml", ws / "flaky.md"
    try:
        code, out = _run(ws, "gate", "--candidate", "source:trial-3.json", "--repeat", "3", "--json",
                         "--junit", str(junit), "--markdown", str(md))
        assert code == 0, out
        report = json.loads(out)
        items = {i["evaluator"]: i for i in report["items"]}
        assert items["no-tool-errors"]["flaky_units"] == []  # a deterministic check never disagrees with itself
        flaky = items["coin-flip"]["flaky_units"]
        assert flaky and report["flaky_units"] == flaky
        for f in flaky:
            assert len(f["outcomes"]) == 3 and len(set(f["outcomes"])) == 2
            assert f["verdict"] == ("pass" if f["outcomes"].count("pass") >= 2 else "fail")
        passes = items["coin-flip"]["pass_rate"] * 50
        assert passes == pytest.approx(round(passes))
        text = md.read_text()
        assert f"### Flaky units ({len(flaky)})" in text
        case = next(c for c in ET.parse(junit).getroot().iter("testcase") if c.get("name") == "coin-flip")
        system_out = case.findtext("system-out") or ""
        for f in flaky:
            assert f"`{f['unit_id']}`" in text and f"flaky unit {f['unit_id']}: repeats" in system_out
        code, out = _run(ws, "gate", "--candidate", "source:trial-3.json", "--repeat", "3")
        listed = [line for line in out.splitlines() if line.startswith("  flaky coin-flip tau-airline/")]
        assert code == 0 and listed and f"coin-flip: {len(listed)} flaky units" in out, out
    finally:
        flaky_check.unlink()


def test_help_documents_exit_codes(ws: Path) -> None:
    code, out = _run(ws, "gate", "--help")
    assert code == 0
    for text in ("exit 0 pass", "exit 1 regression", "exit 2 usage", "exit 3 too many", "--candidate", "--units",
                 "--repeat", "--junit", "--markdown", "--alpha", "--max-unscored"):
        assert text in " ".join(out.split()), text


# --- the real local judge -------------------------------------------------------------------
JUDGE = EvaluatorDef.model_validate({
    "name": "resolves-request", "kind": "llm_judge", "dimension": "task success", "min_pass_rate": 0.0,
    "criterion": {"name": "resolves-request", "text": "The agent resolves the user's request as the airline "
                                                      "policy allows, and every tool call it makes succeeds."},
    "judge": {}})


@pytest.fixture(scope="module")
def judge_ws(tmp_path_factory: pytest.TempPathFactory, raw_runs: list[dict[str, Any]]) -> Path:
    """Three real units and an active llm_judge on the local SmolLM2 judge (small prompts, one thread)."""
    ws = tmp_path_factory.mktemp("gate-judge")
    (ws / "assay.toml").write_text("[judge]\nmax_prompt_chars = 1200\nn_threads = 1\n")
    (ws / "three.json").write_text(json.dumps([r for r in raw_runs if r["trial"] == 0][:3]))
    code, out = _run(ws, "ingest", str(ws / "three.json"))
    assert code == 0, out
    _activate(ws, JUDGE)
    return ws


def _repeats_in(reason: str) -> list[str]:
    return reason.rsplit("(repeats: ", 1)[1].split(";")[0].split(", ")


def test_real_judge_repeats_are_fresh_calls_and_flaky_units_are_listed(judge_ws: Path) -> None:
    code, out = _run(judge_ws, "gate", "--repeat", "2", "--max-unscored", "1.0", "--json")
    report = json.loads(out)
    item = report["items"][0]
    assert item["judge_model"] == "smollm2-135m-instruct" and report["repeat"] == 2
    assert code == (3 if item["n"] == 0 else 0), out
    store = Store(load_settings(judge_ws).resolved_store_url())
    with store.session() as s:
        cache_rows = s.scalar(select(func.count()).select_from(JudgeCacheRow))
        rows = list(s.scalars(select(ScoreRow).where(ScoreRow.run_id == report["run_id"])))
    store.close()
    assert cache_rows == 6  # 3 units x 2 repeats: the second repeat never read the first one's reply
    assert len(rows) == 3 and all(r.judge_model == "smollm2-135m-instruct" for r in rows)
    flaky = {f["unit_id"]: f for f in report["flaky_units"]}
    for row in rows:
        if row.status != "scored":
            continue
        outcomes = _repeats_in(row.reason)
        verdicts = [o for o in outcomes if o in ("pass", "fail")]
        majority = "pass" if verdicts.count("pass") * 2 > len(verdicts) else "fail"
        assert row.verdict == majority and len(outcomes) == 2
        assert (row.unit_id in flaky) == (len(set(outcomes)) > 1)
        if row.unit_id in flaky:
            assert flaky[row.unit_id]["outcomes"] == outcomes

    # against that run as baseline (same units: paired by unit id); the repeats come from the cache
    junit, md = judge_ws / "gate.xml", judge_ws / "gate.md"
    code, out = _run(judge_ws, "gate", "--repeat", "2", "--baseline", report["run_id"], "--max-unscored", "1.0",
                     "--json", "--junit", str(junit), "--markdown", str(md))
    again = json.loads(out)
    assert again["pairing"]["key"] == "unit" and again["items"][0]["pass_rate"] == item["pass_rate"]
    assert code == (3 if item["n"] == 0 else 0), out
    if item["n"]:
        assert again["items"][0]["comparison"]["diff"] == 0.0
    assert ET.parse(junit).getroot().find("testsuite/testcase").get("name") == "resolves-request"  # type: ignore[union-attr]
    text = md.read_text()
    assert "smollm2-135m-instruct" in text
    assert ("### Flaky units" in text) == bool(again["flaky_units"])


def test_real_judge_truncated_replies_are_unscored_and_exit_3(judge_ws: Path) -> None:
    # 4 output tokens cannot hold a JSON verdict: every reply is unscored, never a pass or a fail
    code, out = _run(judge_ws, "gate", "--json", env={"ASSAY_JUDGE__MAX_TOKENS": "4"})
    assert code == 3, out
    item = json.loads(out)["items"][0]
    assert item["n"] == 0 and item["n_unscored"] + item["n_errors"] == 3 and item["pass_rate"] is None
    assert item["failures"] == ["errors"]


# --- the optional cost and latency check ---------------------------------------------------------------
COST_MAPPING = """
name: agent-runs
id: run
attributes: {task_id: task}
events: "steps[*]"
event_duration: seconds
messages:
  - {role: user, content: ask}
  - {role: assistant, content: say}
usage: {input_tokens: tokens, cost: cost, model: model}
"""


def _cost_runs(path: Path, side: str, cost: float | None, seconds: float, n: int = 30) -> Path:
    noise = random.Random(side)
    runs = [{"run": f"{side}-{t}", "task": t, "steps": [
        {"ask": f"task {t}", "seconds": 0.1},
        {"say": "done", "seconds": seconds * noise.uniform(0.9, 1.1), "tokens": 100, "model": "m-1",
         **({"cost": cost * noise.uniform(0.8, 1.2)} if cost is not None else {})}]} for t in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in runs))
    return path


@pytest.fixture(scope="module")
def cost_ws(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Baseline runs at ~$0.010 and ~2 s each; candidate runs of the same 30 tasks at ~$0.020 and ~2 s;
    a third side whose cost is not recorded; one active code evaluator."""
    ws = tmp_path_factory.mktemp("gate-cost")
    (ws / "mapping.yaml").write_text(COST_MAPPING)
    files = [_cost_runs(ws / "baseline.jsonl", "b", 0.010, 2.0), _cost_runs(ws / "candidate.jsonl", "c", 0.020, 2.0),
             _cost_runs(ws / "nocost.jsonl", "n", None, 2.0)]
    code, out = _run(ws, "ingest", "--mapping", str(ws / "mapping.yaml"), *map(str, files))
    assert code == 0 and "90 new" in out, out
    _activate(ws, _code_evaluator("no-tool-errors", "assay.evaluators.checks:no_tool_errors"))
    return ws


def test_a_cost_regression_fails_the_gate_with_its_ci(cost_ws: Path) -> None:
    code, out = _run(cost_ws, "gate", "--candidate", "source:candidate.jsonl", "--baseline", "source:baseline.jsonl",
                     "--max-cost-increase", "0.2", "--max-latency-increase", "0.2", "--json",
                     "--junit", str(cost_ws / "gate.xml"), "--markdown", str(cost_ws / "gate.md"))
    assert code == 1, out
    report = json.loads(out)
    assert all(item["passed"] for item in report["items"])  # the evaluators pass: only the cost regressed
    cost, latency = report["usage_checks"]
    assert (cost["metric"], cost["failure"], cost["paired"], cost["n_candidate"]) == ("cost", "regression", True, 30)
    assert 0.8 < cost["increase"] < 1.2 and 0.2 < cost["ci_low"] < cost["increase"] < cost["ci_high"]
    assert latency["failure"] is None and latency["ci_low"] < 0.2 and abs(latency["increase"]) < 0.1
    case = ET.parse(cost_ws / "gate.xml").getroot().find(".//testcase[@name='cost']")
    assert case is not None and case.find("failure") is not None
    assert "cost regression" in case.find("failure").get("message", "")  # type: ignore[union-attr]
    markdown = (cost_ws / "gate.md").read_text()
    assert "### Cost and latency per unit" in markdown and "❌ regression" in markdown and "30/30 vs 30/30" in markdown


def test_the_cost_check_is_off_by_default_and_needs_a_baseline(cost_ws: Path) -> None:
    code, out = _run(cost_ws, "gate", "--candidate", "source:candidate.jsonl", "--baseline", "source:baseline.jsonl",
                     "--json")
    assert code == 0 and json.loads(out)["usage_checks"] == []
    code, out = _run(cost_ws, "gate", "--candidate", "source:candidate.jsonl", "--max-cost-increase", "0.2")
    assert code == 2 and "give --baseline" in out


def test_an_unknown_cost_is_not_a_pass(cost_ws: Path) -> None:
    code, out = _run(cost_ws, "gate", "--candidate", "source:nocost.jsonl", "--baseline", "source:baseline.jsonl",
                     "--max-cost-increase", "0.2", "--max-latency-increase", "0.5", "--json")
    assert code == 3, out
    cost, latency = json.loads(out)["usage_checks"]
    assert cost["failure"] == "unknown" and "known for 0 candidate" in cost["reason"]
    assert latency["failure"] is None  # the latency is known on both sides
