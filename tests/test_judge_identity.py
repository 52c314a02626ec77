"""A certificate covers the judge it was earned with: identity recorded at calibration, runs with another judge
refused (exit 2) unless allowed and recorded, a judge cache keyed by the same fields, ``--refresh``."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, Request
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store.scores import RunParams, read_params
from assay._store.store import Store
from assay._store.tables import RunRow
from assay.annotations import Annotation
from assay.annotations.store import add_annotations, add_criterion
from assay.evaluators import EvaluatorDef, save_evaluator
from assay.models import CachedJudge, JudgeIdentity, JudgeReply, judge_change, judge_identity
from assay.models.identity import settings_parameters
from assay.settings import JudgeSettings, load_settings
from assay.traces import read_file

from .conftest import AIRLINE

JUDGE = EvaluatorDef(name="tool-ok-judge", kind="llm_judge", dimension="tool use",
                     criterion={"name": "tool-ok", "version": 1, "text": "Every tool call succeeds."})


class Server:
    """An OpenAI-compatible judge on a loopback port: ``fixed`` False says pass to everything (the broken
    judge), True reads the timeline's [ERROR] marks; every request body is kept."""

    def __init__(self) -> None:
        self.fixed = False
        self.bodies: list[dict[str, Any]] = []
        self.api = FastAPI()

        @self.api.post("/v1/chat/completions")
        async def complete(request: Request) -> dict[str, Any]:
            body = await request.json()
            self.bodies.append(body)
            timeline = body["messages"][-1]["content"].split("<timeline>", 1)[1].split("</timeline>", 1)[0]
            failed = self.fixed and "[ERROR]" in timeline
            text = json.dumps({"reason": "read it", "verdict": "fail" if failed else "pass"})
            return {"id": "c", "object": "chat.completion", "created": 1, "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": text}}],
                    "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[Server, int]]:
    fake = Server()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(fake.api, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                                        ws="none"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    while not srv.started:
        time.sleep(0.02)
    yield fake, port
    srv.should_exit = True
    thread.join(timeout=10)


@pytest.fixture(scope="module")
def ws(tmp_path_factory: pytest.TempPathFactory, server: tuple[Server, int]) -> Path:
    """200 airline runs labelled on tool-ok (fail: a tool error), an llm_judge behind the fake server."""
    ws = tmp_path_factory.mktemp("judge")
    (ws / "assay.toml").write_text(f'[judge]\nprovider = "openai"\nmodel = "reader"\n'
                                   f'base_url = "http://127.0.0.1:{server[1]}/v1"\napi_key = "k"\n'
                                   'concurrency = 8\nmax_prompt_chars = 1000000\n')
    store = Store(load_settings(ws).resolved_store_url())
    units = read_file(AIRLINE).units
    store.add_units(units)
    add_criterion(store, "Every tool call succeeds.", name="tool-ok")
    add_annotations(store, [Annotation(unit_id=u.unit_id, annotator="ann", criterion="tool-ok",
                                       label="fail" if u.has_error else "pass") for u in units])
    store.close()
    save_evaluator(JUDGE, ws / "evaluators" / "tool-ok-judge.yaml")
    return ws


def _run(ws: Path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(app, ["--workspace", str(ws), *args], env=env)
    return result.exit_code, result.stdout if "--json" in args else " ".join(result.output.split())


def _calibrate(ws: Path, *extra: str) -> dict[str, Any]:
    code, out = _run(ws, "calibrate", "tool-ok-judge", "--split", "0.2,0.2,0.6", "--json", *extra)
    assert code == 0, out
    return dict(json.loads(out))


def test_refresh_re_asks_a_judge_fixed_behind_the_same_name(ws: Path, server: tuple[Server, int]) -> None:
    fake, port = server
    broken = _calibrate(ws)
    assert broken["status"] == "draft" and broken["test"]["tnr"]["value"] == 0.0 and len(fake.bodies) == 200
    assert broken["judge"]["provider"] == "openai" and broken["judge"]["model"] == "reader"
    assert broken["judge"]["base_url"] == f"http://127.0.0.1:{port}/v1"
    assert broken["judge"]["parameters"]["temperature"] == 0.0 and broken["judge"]["parameters"]["max_tokens"] == 160
    fake.fixed = True
    stale = _calibrate(ws)  # same model name, endpoint and parameters: the cache answers, nothing is asked
    assert len(fake.bodies) == 200 and stale["test"]["tnr"]["value"] == 0.0
    fresh = _calibrate(ws, "--refresh")
    assert len(fake.bodies) == 400 and fresh["status"] == "active" and fresh["test"]["tnr"]["value"] == 1.0
    again = _calibrate(ws)  # the refreshed replies replaced the stale ones in the cache
    assert len(fake.bodies) == 400 and again["test"]["tnr"]["value"] == 1.0 and again["status"] == "active"


def test_a_run_with_another_judge_refuses_unless_allowed(ws: Path, server: tuple[Server, int]) -> None:
    fake, _ = server
    if _calibrate(ws)["status"] != "active":  # run alone: the previous test leaves it certified
        fake.fixed = True
        assert _calibrate(ws, "--refresh")["status"] == "active"
    n = len(fake.bodies)
    code, out = _run(ws, "gate", "--json")
    assert code == 0, out
    assert len(fake.bodies) == n  # the certified judge, cached
    for env, what in (({"ASSAY_JUDGE__MODEL": "other"}, "model: 'reader' -> 'other'"),
                      ({"ASSAY_JUDGE__TEMPERATURE": "0.7"}, "temperature: 0.0 -> 0.7"),
                      ({"ASSAY_JUDGE__SEED": "7"}, "seed: None -> 7")):
        for args in (["gate"], ["worker", "--once"], ["score", "--evaluator", "tool-ok-judge", "--units", "all"]):
            code, out = _run(ws, *args, env=env)
            assert code == 2 and "refusing to score with a judge that was not certified" in out, (args, out)
            assert what in out and "certified with openai reader" in out and "would use openai" in out
        assert len(fake.bodies) == n  # refused before asking anything
    code, out = _run(ws, "gate", "--allow-judge-change", "--json", env={"ASSAY_JUDGE__SEED": "7"})
    assert code == 0, out
    assert len(fake.bodies) == n + 200 and all(b["seed"] == 7 for b in fake.bodies[n:])  # a new judge: new calls
    report = json.loads(out)
    assert any("judge not the certified one" in note for note in report["items"][0]["notes"])
    store = Store(load_settings(ws).resolved_store_url())
    with store.session() as s:
        run = s.get(RunRow, report["run_id"])
        assert run is not None
        assert "seed: None -> 7" in run.params["judge_changes"]["tool-ok-judge"]
        lineage = next(iter(read_params(run, RunParams).lineage.values()))
    store.close()
    assert "seed: None -> 7" in str(lineage.judge_parameters["judge_change"])
    code, out = _run(ws, "score", "--evaluator", "tool-ok-judge", "--units", "prefix:tau-airline/task-1/",
                     "--allow-judge-change", "--json", env={"ASSAY_JUDGE__SEED": "7"})
    assert code == 0 and "seed: None -> 7" in json.loads(out)["judge_change"], out


def test_identity_fields_and_differences() -> None:
    class Bare:  # an extension's judge that reports no parameters
        model_name = "m"

        def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
            return JudgeReply(text="{}", model="m")

    a = judge_identity(Bare(), JudgeSettings(provider="vertex", model="m", base_url="http://x/v1/"))
    b = judge_identity(Bare(), JudgeSettings(provider="vertex", model="m", base_url="http://x/v1", max_tokens=99))
    assert a.base_url == "http://x/v1" and a.parameters["max_tokens"] == 160 and a.fingerprint != b.fingerprint
    assert judge_change(a, "m", b) == "max_tokens: 160 -> 99" and judge_change(a, "m", a) is None
    assert judge_change(None, "m", a) is None and judge_change(None, "old", a) == "model: 'old' -> 'm'"
    assert JudgeIdentity.model_validate(a.model_dump(mode="json")) == a


def test_the_cache_keys_a_bare_judge_by_its_settings(tmp_path: Path) -> None:
    class Counting:
        model_name = "m"
        calls = 0

        def complete(self, messages: list[dict[str, str]], json_schema: dict[str, Any] | None = None) -> JudgeReply:
            Counting.calls += 1
            return JudgeReply(text="{}", model="m")

    store = Store(f"sqlite:///{tmp_path / 'a.db'}")
    ask = [{"role": "user", "content": "hi"}]
    for settings in (JudgeSettings(provider="x", base_url="http://a"), JudgeSettings(provider="x", base_url="http://b"),
                     JudgeSettings(provider="x", base_url="http://a", temperature=0.5)):
        CachedJudge(Counting(), store, settings_parameters(settings)).complete(ask)
        CachedJudge(Counting(), store, settings_parameters(settings)).complete(ask)
    assert Counting.calls == 3  # one call per distinct endpoint / sampling setting, then cached
    CachedJudge(Counting(), store, settings_parameters(JudgeSettings(provider="x", base_url="http://a")),
                refresh=True).complete(ask)
    assert Counting.calls == 4
