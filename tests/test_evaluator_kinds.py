"""Evaluator kinds: a discriminated union on ``kind``, runners in one registry, extensions through entry points.

The content versions of existing ``code`` and ``llm_judge`` definitions are pinned: they were computed
before the kinds became classes, and a changed version would silently invalidate every calibration.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from assay.evaluators import (
    CodeEvaluatorDef,
    EvaluationResult,
    EvaluatorDef,
    HybridEvaluatorDef,
    LlmJudgeEvaluatorDef,
    content_version,
    evaluate_many,
    evaluator_json_schema,
    load_evaluator,
    save_evaluator,
)
from assay.evaluators.kinds import EVALUATOR_KINDS, definitions_adapter
from assay.exceptions import ConfigError, UsageError
from assay.traces import Unit, read_file
from tests.conftest import AIRLINE
from tests.plugin_fixtures import fake_distribution, installed

# evaluator files as users wrote them before the kinds became classes, with the versions they had then
EXISTING = {
    "code-no-args": ("733be50518af", """\
name: no-tool-errors
kind: code
dimension: tool use
criterion: {name: tool-calls-valid, version: 1, text: Every tool call is valid.}
code: {callable: 'assay.evaluators.checks:no_tool_errors'}
threshold: 0.8
min_pass_rate: 0.5
sample_rate: 0.1
"""),
    "code-args": ("e8271c60ae64", """\
name: no-cancel
kind: code
dimension: policy
description: never cancels basic economy
criterion: {name: no-basic-cancel, version: 2, text: The agent never cancels a basic economy reservation.}
pass_score: 0.7
code:
  callable: assay.evaluators.checks:tool_called
  args: {tool: cancel_reservation, expected: false}
"""),
    # depends on the shipped default prompt's text, as it should: a new default prompt is a new version
    "judge-default": ("a838b6736c16", """\
name: resolves-request-judge
kind: llm_judge
dimension: task success
criterion: {name: resolves-request, text: The agent resolved the request per policy.}
"""),
    "judge-empty-section": ("a838b6736c16", """\
name: resolves-request-judge
kind: llm_judge
dimension: task success
criterion: {name: resolves-request, text: The agent resolved the request per policy.}
judge: {}
"""),
    "judge-custom": ("35f13b178635", """\
name: tone
kind: llm_judge
dimension: tone
criterion: {name: polite, text: The agent is polite.}
judge:
  model: gpt-4o-mini
  prompt: |
    Timeline:
    {{ timeline }}
    Criterion: {{ criterion.text }}
    Answer {{ labels | join(' or ') }}.
  labels: {good: 1.0, partial: 0.5, bad: 0.0}
"""),
    "judge-scale": ("b85d78b9caa3", """\
name: helpful
kind: llm_judge
dimension: helpfulness
criterion: {name: helpful, text: Helpful answers.}
judge: {scale: [1, 10]}
pass_score: 0.6
"""),
}


@pytest.mark.parametrize("name", list(EXISTING))
def test_existing_definitions_keep_their_content_version(name: str, tmp_path: Path) -> None:
    version, text = EXISTING[name]
    path = tmp_path / f"{name}.yaml"
    path.write_text(text)
    loaded = load_evaluator(path)
    assert content_version(loaded) == version
    assert content_version(EvaluatorDef(**yaml.safe_load(text))) == version
    again = load_evaluator(save_evaluator(loaded, tmp_path / "again.yaml"))
    assert again == loaded and content_version(again) == version


def test_definitions_stored_by_older_versions_still_load() -> None:
    # EvaluatorRow.definition as written before: the other kind's section is there as null
    stored_code = {**yaml.safe_load(EXISTING["code-args"][1]), "version": 1, "judge": None, "threshold": 0.8}
    stored_judge = {**yaml.safe_load(EXISTING["judge-scale"][1]), "version": 1, "code": None}
    code, judge = EvaluatorDef.model_validate(stored_code), EvaluatorDef.model_validate(stored_judge)
    assert isinstance(code, CodeEvaluatorDef) and content_version(code) == EXISTING["code-args"][0]
    assert isinstance(judge, LlmJudgeEvaluatorDef) and content_version(judge) == EXISTING["judge-scale"][0]
    assert "judge" not in code.model_dump() and "code" not in judge.model_dump()


def test_each_kind_is_its_own_class_of_one_union(tmp_path: Path) -> None:
    common: dict[str, Any] = {"name": "x", "dimension": "d", "criterion": {"name": "c", "text": "t"}}
    check = {"callable": "assay.evaluators.checks:no_tool_errors"}
    code = EvaluatorDef(**common, kind="code", code=check)
    judge = EvaluatorDef.model_validate({**common, "kind": "llm_judge"})
    hybrid = EvaluatorDef.model_validate({**common, "kind": "hybrid", "code": check})
    assert (type(code), type(judge), type(hybrid)) == (CodeEvaluatorDef, LlmJudgeEvaluatorDef, HybridEvaluatorDef)
    assert (code.uses_judge, judge.uses_judge, hybrid.uses_judge) == (False, True, True)
    assert code.code_spec() == hybrid.code_spec() and judge.code_spec() is None
    with pytest.raises(UsageError, match="asks no judge"):
        code.judge_spec()
    assert EVALUATOR_KINDS.names()[:4] == ("code", "llm_judge", "hybrid", "external")
    assert evaluator_json_schema()["properties"]["kind"]["enum"] == ["code", "llm_judge", "hybrid", "external"]
    # errors name the field without the union's tag, and an unknown kind lists the known ones
    cases = {"nocode": ({**common, "kind": "code"}, "code: Field required"),
             "judgecode": ({**common, "kind": "llm_judge", "code": check}, "code: Extra inputs are not permitted"),
             "sql": ({**common, "kind": "sql"}, "kind: must be one of: code, llm_judge, hybrid, external, not 'sql'"),
             "nokind": (common, "kind: must be one of: code, llm_judge, hybrid, external$")}
    for name, (data, message) in cases.items():
        (tmp_path / f"{name}.yaml").write_text(yaml.safe_dump(data))
        with pytest.raises(ConfigError, match=message):
            load_evaluator(tmp_path / f"{name}.yaml")


LENGTH_KIND = """
    from typing import Literal

    from assay.evaluators import EvaluatorDef, KindRunner
    from assay.traces import step_timeline


    class LengthDef(EvaluatorDef):
        kind: Literal["length"]
        max_steps: int


    class LengthRunner(KindRunner[LengthDef]):
        definition = LengthDef

        def run(self, unit):
            n = len(step_timeline(unit))
            return self.result(unit, 1.0 if n <= self.defn.max_steps else 0.0, f"{n} steps", "code")
"""


def test_a_package_adds_a_kind_through_the_entry_point_group(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    units: list[Unit] = read_file(AIRLINE).units[:20]
    plugin = fake_distribution(tmp_path / "site", "assay-length", {"assay.evaluators": {
        "length": "assay_length_kind:LengthRunner"}}, {"assay_length_kind": LENGTH_KIND})
    path = tmp_path / "short.yaml"
    path.write_text("name: short\nkind: length\ndimension: brevity\ncriterion: {name: short, text: Short runs.}\n"
                    "max_steps: 30\n")
    with installed(monkeypatch, plugin, EVALUATOR_KINDS):
        defn = load_evaluator(path)
        assert type(defn).__name__ == "LengthDef" and not defn.uses_judge and len(content_version(defn)) == 12
        results = evaluate_many(defn, units)
        assert all(isinstance(r, EvaluationResult) for r in results)
        assert {r.verdict for r in results} == {"pass", "fail"}  # real runs on both sides of 30 steps
        assert "length" in evaluator_json_schema()["properties"]["kind"]["enum"]
        assert "LengthDef" in definitions_adapter().json_schema()["$defs"]
    with pytest.raises(ConfigError, match="kind: must be one of: code, llm_judge, hybrid, external, not 'length'"):
        load_evaluator(path)  # gone with its package


def test_a_kind_whose_definition_names_another_kind_is_refused(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = fake_distribution(tmp_path / "site", "assay-misnamed", {"assay.evaluators": {
        "short": "assay_length_kind:LengthRunner"}}, {"assay_length_kind": LENGTH_KIND})
    with installed(monkeypatch, plugin, EVALUATOR_KINDS), pytest.raises(ConfigError, match=r"Literal\['short'\]"):
        definitions_adapter()
