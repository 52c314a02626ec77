"""``tune``: candidates scored on dev only, the winner calibrated once on test."""

from __future__ import annotations

import socket
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store.store import Store
from assay.annotations import Annotation
from assay.annotations.store import add_annotations, add_criterion
from assay.calibration import build_dataset, split_dataset
from assay.calibration.splits import count_test_uses
from assay.calibration.tune import prompt_variants, tune
from assay.evaluators import (
    EvaluationResult,
    EvaluatorDef,
    content_version,
    evaluate_many,
    load_evaluator,
    render_prompt,
    save_evaluator,
)
from assay.exceptions import JudgeError, UsageError
from assay.models import JudgeReply
from assay.settings import CalibrationSettings, JudgeSettings, load_settings
from assay.traces import read_file
from assay.traces.timeline import render_timeline, step_timeline
from tests.conftest import AIRLINE

CHECK = EvaluatorDef(name="no-tool-errors", kind="code", dimension="tool use",
                     criterion={"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."},  # type: ignore[arg-type]
                     code={"callable": "assay.evaluators.checks:no_tool_errors"})  # type: ignore[arg-type]
JUDGE = EvaluatorDef.model_validate({"name": "tool-ok-judge", "kind": "llm_judge", "dimension": "tool use",
                                     "criterion": {"name": "tool-ok", "text": "Every tool call succeeds."},
                                     "judge": {}})


class ExampleReader:
    """A stand-in judge that only reads [ERROR] marks when the prompt shows labelled examples.

    Without examples it says "pass" to everything; with them it fails exactly the units whose own
    timeline (the first <timeline> block) marks an error. It records each unit timeline it judged.
    """

    model_name = "example-reader"

    def __init__(self) -> None:
        self.timelines: list[str] = []

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        prompt = messages[-1]["content"]
        timeline = prompt.split("<timeline>", 1)[1].split("</timeline>", 1)[0]
        self.timelines.append(timeline)
        failed = "Labelled examples" in prompt and "[ERROR]" in timeline
        return JudgeReply(text=f'{{"reason": "read it", "verdict": "{"fail" if failed else "pass"}"}}',
                          model=self.model_name)


@pytest.fixture()
def store(tmp_path: Path) -> Store:
    units = read_file(AIRLINE).units
    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    store.add_units(units)
    add_criterion(store, "Every tool call succeeds.", name="tool-ok")
    verdicts = {r.unit_id: r.verdict for r in evaluate_many(CHECK, units) if isinstance(r, EvaluationResult)}
    add_annotations(store, [Annotation(unit_id=u, annotator="ann", criterion="tool-ok", label=v)  # type: ignore[arg-type]
                            for u, v in verdicts.items()])
    return store


def test_tune_searches_on_dev_and_reports_once_on_test(store: Store) -> None:
    judge = ExampleReader()
    # the point rule: 11 human fails on test are too few for the default lower bounds, and this pins the search
    best, report = tune(store, JUDGE, judge, JudgeSettings(), shots=(0, 1), example_seeds=(0, 1), n_boot=200,
                        instructions=(), certification=CalibrationSettings(policy="point"))
    split = split_dataset(build_dataset(store, "tool-ok"))
    dev, train = set(split.units("dev")), set(split.units("train"))
    assert [c.shots_per_label for c in report.candidates] == [0, 1, 1]
    assert all(c.dev.n == len(dev) == 40 for c in report.candidates)
    assert all(set(c.examples) <= train for c in report.candidates)
    zero = report.candidates[0]
    assert zero.dev.agreement.value is not None and zero.dev.agreement.value < 1.0  # the no-example judge says pass
    assert report.winner.shots_per_label == 1
    assert report.winner.dev.agreement.value is not None and report.winner.dev.agreement.value > 0.95
    assert report.winner.dev.agreement.value > zero.dev.agreement.value
    assert "Labelled examples" in best.prompt_template() and best.name == JUDGE.name
    assert report.calibration.evaluator_version == report.winner.version
    assert report.calibration.status == "active" and report.calibration.test is not None
    assert (report.calibration.test.agreement.value or 0) > 0.9  # (a few units' [ERROR] marks fall outside the prompt)
    assert count_test_uses(store, report.calibration.split_id or "") == 1  # test looked at once, by the winner
    # the search itself only ever judged dev units: 3 candidates x 40 dev, then the one calibration of all 200
    assert len(judge.timelines) == 3 * 40 + 200


class VariantReader(ExampleReader):
    """A stand-in judge whose accuracy depends on the prompt variant: it reads the [ERROR] marks only
    when told to be strict *and* shown labelled examples; any other prompt gets "pass" for everything."""

    model_name = "variant-reader"

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        prompt = messages[-1]["content"]
        timeline = prompt.split("<timeline>", 1)[1].split("</timeline>", 1)[0]
        self.timelines.append(timeline)
        failed = "Be strict" in prompt and "Labelled examples" in prompt and "[ERROR]" in timeline
        return JudgeReply(text=f'{{"verdict": "{"fail" if failed else "pass"}", "reason": "read it"}}',
                          model=self.model_name)


def test_tune_picks_the_prompt_variant_on_dev_and_touches_test_once(store: Store) -> None:
    judge = VariantReader()
    settings = JudgeSettings()
    best, report = tune(store, JUDGE, judge, settings, shots=(0, 1), example_seeds=(0, 1), n_boot=200)
    variants = prompt_variants(JUDGE)
    assert list(variants) == ["as-written", "verdict-first", "strict", "lenient", "restated"]  # own prompt = default
    assert len(report.candidates) == len(variants) * 3 == 15
    assert {c.variant for c in report.candidates} == set(variants)
    assert report.winner.variant == "strict" and report.winner.shots_per_label == 1
    assert (report.winner.dev.agreement.value or 0) > max((c.dev.agreement.value or 0) for c in report.candidates
                                                           if c.variant != "strict" or c.shots_per_label == 0)
    assert "Be strict" in best.prompt_template() and "Labelled examples" in best.prompt_template()
    assert "prompt variant strict" in best.description and content_version(best) == report.winner.version
    assert report.calibration.evaluator_version == report.winner.version
    # count the judge calls per unit: the search scored dev only; test and train were scored once, by the winner
    split = split_dataset(build_dataset(store, "tool-ok"))
    units = store.units(sorted(split.assignment))
    timeline_of = {u.unit_id: render_timeline(step_timeline(u), max_chars=settings.max_prompt_chars,
                                              skip_system=True) for u in units}
    assert len(set(timeline_of.values())) == len(units)  # each unit is recognisable by its timeline
    calls = Counter(t.strip() for t in judge.timelines)
    per_unit = {u: calls[t.strip()] for u, t in timeline_of.items()}
    assert all(per_unit[u] == 1 for u in split.units("test")) and len(split.units("test")) == 60
    assert all(per_unit[u] == 1 for u in split.units("train"))
    assert all(per_unit[u] == 15 + 1 for u in split.units("dev"))
    assert sum(calls.values()) == 15 * 40 + 200 == len(judge.timelines)
    assert count_test_uses(store, report.calibration.split_id or "") == 1


def test_prompt_variants_render_and_unknown_names_are_refused(store: Store) -> None:
    unit = store.units([split_dataset(build_dataset(store, "tool-ok")).units("dev")[0]])[0]
    for name, prompt in prompt_variants(JUDGE).items():
        variant = JUDGE.model_copy(update={"judge": JUDGE.judge_spec().model_copy(update={"prompt": prompt})})
        text = render_prompt(variant, unit)
        assert "Every tool call succeeds." in text and "{{" not in text and "{%" not in text, name
    assert '{"verdict": "...", "reason": "..."}' in prompt_variants(JUDGE)["verdict-first"]
    assert prompt_variants(JUDGE, ()) == {"as-written": JUDGE.prompt_template()}
    with pytest.raises(UsageError, match="unknown prompt variant"):
        prompt_variants(JUDGE, ("shouty",))


class Down:
    model_name = "down"

    def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        raise JudgeError("connection refused", self.model_name)


def test_tune_refuses_code_evaluators_and_a_judge_that_never_answers(store: Store) -> None:
    with pytest.raises(UsageError, match="only llm_judge"):
        tune(store, CHECK, None, JudgeSettings())
    with pytest.raises(JudgeError, match="no candidate could be scored on the 40 dev units"):
        tune(store, JUDGE, Down(), JudgeSettings(), shots=(0, 1), example_seeds=(0,))
    split = split_dataset(build_dataset(store, "tool-ok"))
    assert count_test_uses(store, split.split_id) == 0  # the test split was never looked at


def test_cli_tune_writes_the_winner(tmp_path: Path) -> None:
    """``assay calibrate NAME --tune`` against a real local OpenAI-compatible server playing ExampleReader."""
    reader = ExampleReader()
    api = FastAPI()

    @api.post("/v1/chat/completions")
    async def complete(request: Request) -> dict[str, Any]:
        body = await request.json()
        text = reader.complete(body["messages"]).text
        return {"id": "c", "object": "chat.completion", "created": 1, "model": body["model"],
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(api, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                           ws="none"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        (tmp_path / "assay.toml").write_text(f'[judge]\nprovider = "openai"\nmodel = "reader"\n'
                                             f'base_url = "http://127.0.0.1:{port}/v1"\napi_key = "k"\n'
                                             'concurrency = 8\n')
        store = Store(load_settings(tmp_path).resolved_store_url())
        units = read_file(AIRLINE).units
        store.add_units(units)
        add_criterion(store, "Every tool call succeeds.", name="tool-ok")
        verdicts = {r.unit_id: r.verdict for r in evaluate_many(CHECK, units) if isinstance(r, EvaluationResult)}
        add_annotations(store, [Annotation(unit_id=u, annotator="ann", criterion="tool-ok", label=v)  # type: ignore[arg-type]
                                for u, v in verdicts.items()])
        store.close()
        path = save_evaluator(JUDGE, tmp_path / "evaluators" / "tool-ok-judge.yaml")
        result = CliRunner().invoke(app, ["--workspace", str(tmp_path), "calibrate", "tool-ok-judge", "--tune"])
        assert result.exit_code == 0, result.output
        written = load_evaluator(path)
        assert "Labelled examples" in written.prompt_template() and content_version(written) != content_version(JUDGE)
        assert f"wrote the winner {content_version(written)}" in result.output
        assert "(winner)" in result.output and "test: agreement" in result.output
        assert "tuned on dev (25 candidates): prompt variant" in written.description
    finally:
        server.should_exit = True
        thread.join(timeout=10)
