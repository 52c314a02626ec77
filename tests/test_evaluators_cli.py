"""``assay evaluators schema`` and ``assay evaluators diff``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from typer.testing import CliRunner

from assay._cli.main import app
from assay._store.store import Store
from assay.calibration.calibrate import save_evaluator_record
from assay.evaluators import EvaluatorDef, content_version, evaluator_json_schema, save_evaluator
from assay.settings import load_settings

runner = CliRunner()
V1_PROMPT = "Timeline:\n{{ timeline }}\nCriterion: {{ criterion.text }}\nAnswer pass or fail as JSON.\n"
V2_PROMPT = "Timeline:\n{{ timeline }}\nCriterion: {{ criterion.text }}\nThink first, then answer pass or fail.\n"


def _run(ws: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--workspace", str(ws), *args])
    return result.exit_code, result.output


def _def(prompt: str) -> EvaluatorDef:
    return EvaluatorDef.model_validate({"name": "resolves", "kind": "llm_judge", "dimension": "task",
                                        "criterion": {"name": "resolves", "text": "Resolves the request."},
                                        "judge": {"prompt": prompt}})


def test_schema_is_printed_and_shipped(tmp_path: Path) -> None:
    code, out = _run(tmp_path, "evaluators", "schema")
    assert code == 0
    assert json.loads(out) == evaluator_json_schema()
    shipped = resources.files("assay.evaluators").joinpath("evaluator.schema.json").read_text(encoding="utf-8")
    assert json.loads(shipped) == evaluator_json_schema()  # regenerate the file when the format changes
    assert set(json.loads(shipped)["properties"]) >= {"name", "kind", "criterion", "judge", "code", "threshold"}


def test_diff_shows_prompt_and_parameter_changes(tmp_path: Path) -> None:
    old, new = _def(V1_PROMPT), _def(V2_PROMPT).model_copy(update={"pass_score": 0.7})
    store = Store(load_settings(tmp_path).resolved_store_url())
    save_evaluator_record(store, old, "draft", None)  # what calibrating v1 left behind
    store.close()
    save_evaluator(new, tmp_path / "evaluators" / "resolves.yaml")
    v1, v2 = content_version(old), content_version(new)
    code, out = _run(tmp_path, "evaluators", "diff", "resolves", v1[:6], v2)
    assert code == 0, out
    assert f"--- resolves@{v1}" in out and f"+++ resolves@{v2}" in out
    assert "-    Answer pass or fail as JSON." in out and "+    Think first, then answer pass or fail." in out
    assert "-pass_score: 0.5" in out and "+pass_score: 0.7" in out
    assert "Timeline:" not in [line[1:].strip() for line in out.splitlines() if line[:1] in "+-"]
    code, out = _run(tmp_path, "evaluators", "diff", "resolves", v1, v1)
    assert code == 0 and "identical" in out
    code, out = _run(tmp_path, "evaluators", "diff", "resolves", "ffff", v2)
    assert code == 2 and "matches 0" in out


def test_an_evaluator_is_found_by_name_or_by_its_file_and_a_miss_lists_the_names(tmp_path: Path) -> None:
    save_evaluator(_def(V1_PROMPT), tmp_path / "evaluators" / "misnamed.yaml")  # file stem != name
    Store(load_settings(tmp_path).resolved_store_url()).close()
    for name in ("resolves", "misnamed"):  # both reach the evaluator: it has no labelled criterion yet
        code, out = _run(tmp_path, "calibrate", name)
        assert code == 2 and "criterion not found: 'resolves'" in out, out
    code, out = _run(tmp_path, "calibrate", "nope")
    said = " ".join(out.split())
    assert code == 2 and "evaluator not found: 'nope' (evaluators in" in said and "evaluators: resolves)" in said
