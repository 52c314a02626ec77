"""The REST API under /api/v1, in process (FastAPI TestClient over the ASGI app) on a real SQLite store."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from assay._store import Store
from assay._store.scores import RunParams, new_run
from assay._store.tables import EvaluatorRow, ScoreRow
from assay._web.app import create_app
from assay._web.auth import create_api_key
from assay.annotations import (
    Annotation,
    OrdinalLevel,
    OrdinalScale,
    PairwiseScale,
    add_annotations,
    add_criterion,
    list_annotations,
)
from tests.ui_fixtures import XSS_UNIT, seed, settings_for


class Api:
    def __init__(self, tmp_path: Path) -> None:
        self.store = Store(settings_for(tmp_path).store_url)
        self.ids = seed(self.store)
        self.key = create_api_key(self.store, owner="ci-bot")
        self.client = TestClient(create_app(settings_for(tmp_path), self.store))
        self.auth = {"Authorization": f"Bearer {self.key}"}

    def get(self, path: str, **params: object) -> object:
        r = self.client.get(f"/api/v1{path}", headers=self.auth, params=params)  # type: ignore[arg-type]
        assert r.status_code == 200, r.text
        return r.json()


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    a = Api(tmp_path)
    with a.client:
        yield a
    a.store.close()
    gc.unfreeze()  # the app's startup froze the test process's heap (see assay._web.ui.freeze_startup_heap)


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer assay_wrong"}, {"X-API-Key": "nope"},
                                     {"Authorization": "Basic abc"}])
def test_401_without_a_valid_key(api: Api, headers: dict[str, str]) -> None:
    for path in ("/signatures", f"/units/{XSS_UNIT}", "/annotations", "/criteria", "/evaluators"):
        r = api.client.get(f"/api/v1{path}", headers=headers)
        assert r.status_code == 401, (path, r.text)
        assert "API key" in r.json()["detail"] and r.headers["www-authenticate"] == "Bearer"
    r = api.client.post("/api/v1/annotations", headers=headers, json={"unit_id": XSS_UNIT, "label": "fail"})
    assert r.status_code == 401
    assert list_annotations(api.store) == []


def test_x_api_key_header_and_configured_key_work(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    settings.server.api_key = "configured-secret-key"
    store = Store(settings.store_url)
    seed(store)
    key = create_api_key(store)
    with TestClient(create_app(settings, store)) as client:
        assert client.get("/api/v1/criteria", headers={"X-API-Key": key}).status_code == 200
        assert client.get("/api/v1/criteria", headers={"X-API-Key": "configured-secret-key"}).status_code == 200
        assert client.get("/api/v1/criteria", headers={"X-API-Key": "configured-secret-kez"}).status_code == 401


def test_signatures_and_unit_timeline(api: Api) -> None:
    sigs = api.get("/signatures")
    assert isinstance(sigs, list) and [s["id"] for s in sigs] == [1]
    assert sigs[0]["size"] == len(api.ids) and sigs[0]["unit_ids"][0] == XSS_UNIT
    unit = api.get(f"/units/{api.ids[1]}")
    assert isinstance(unit, dict)
    assert unit["unit_id"] == api.ids[1] and unit["outcome"] == "fail" and unit["has_error"] is True
    assert [s["kind"] for s in unit["steps"]] == ["user", "assistant", "tool_call", "tool_result"]
    assert unit["steps"][2]["arguments"]["flight"] == "HAT000" and unit["steps"][3]["is_error"] is True
    assert [s["index"] for s in unit["steps"]] == [1, 2, 3, 4]
    assert unit["resolved_from"] is None
    missing = api.client.get("/api/v1/units/no-such-unit", headers=api.auth)
    assert missing.status_code == 404 and "no-such-unit" in missing.json()["detail"]


def test_create_annotation_is_append_only_with_provenance(api: Api) -> None:
    crit = add_criterion(api.store, "Payments must add up.", name="payments", signature_id=1)
    body = {"unit_id": api.ids[1], "label": "fail", "severity": 3, "rationale": "amount off", "criterion": "payments"}
    r = api.client.post("/api/v1/annotations", headers=api.auth, json=body)
    assert r.status_code == 201, r.text
    made = r.json()
    assert made["annotator"] == "ci-bot" and made["source"] == "api" and made["criterion_version"] == crit.version
    assert made["extra"]["api_key"] == api.key[:12] and made["created_at"]
    add_criterion(api.store, "Payments must add up to the fare.", name="payments")  # v2
    r2 = api.client.post("/api/v1/annotations", headers=api.auth,
                         json=body | {"label": "pass", "annotator": "alice", "annotator_kind": "llm"})
    assert r2.status_code == 201 and r2.json()["criterion_version"] == 2
    listed = api.get("/annotations", unit_id=api.ids[1])
    assert isinstance(listed, list)
    assert [(a["annotator"], a["label"], a["criterion_version"]) for a in listed] == [
        ("ci-bot", "fail", 1), ("alice", "pass", 2)]
    assert api.get("/annotations", criterion="payments", limit=1, offset=1) == [listed[1]]
    assert api.get("/annotations", unit_id=api.ids[2]) == []


@pytest.mark.parametrize(("body", "reason"), [
    ({"unit_id": "unit-00", "label": "maybe"}, "label"),
    ({"unit_id": "unit-00", "label": "fail", "severity": 7}, "severity"),
    ({"label": "fail"}, "unit_id"),
    ({"unit_id": "unit-00", "label": "fail", "colour": "red"}, "colour"),
    ({"unit_id": "nope", "label": "fail"}, "unit not found"),
    ({"unit_id": "unit-00", "label": "fail", "criterion": "nope"}, "criterion not found"),
    ({"unit_id": "unit-00", "label": "fail", "criterion": "payments", "criterion_version": 9}, "newer than"),
    ({"unit_id": "unit-00", "label": "fail", "criterion_version": 1}, "without a criterion"),
])
def test_bad_bodies_are_422_with_a_reason(api: Api, body: dict[str, object], reason: str) -> None:
    add_criterion(api.store, "Payments must add up.", name="payments")
    r = api.client.post("/api/v1/annotations", headers=api.auth, json=body)
    assert r.status_code == 422, r.text
    assert reason in r.text
    assert list_annotations(api.store) == []


def test_not_json_is_422(api: Api) -> None:
    r = api.client.post("/api/v1/annotations", headers=api.auth | {"content-type": "application/json"},
                        content=b"{not json")
    assert r.status_code == 422 and "json" in r.text.lower()


def test_criteria_and_agreement(api: Api) -> None:
    add_criterion(api.store, "Payments must add up.", name="payments", signature_id=1)
    labels = [("ann", "unit-00", "fail"), ("admin", "unit-00", "fail"), ("ann", "unit-01", "pass"),
              ("admin", "unit-01", "fail"), ("ann", "unit-02", "pass"), ("admin", "unit-02", "pass")]
    add_annotations(api.store, [Annotation(unit_id=u, annotator=a, label=lab, criterion="payments")  # type: ignore[arg-type]
                                for a, u, lab in labels])
    crits = api.get("/criteria")
    assert crits == [{"id": 1, "name": "payments", "text": "Payments must add up.", "version": 1, "signature_id": 1,
                      "scale": {"kind": "binary"}}]
    ag = api.get("/criteria/payments/agreement")
    assert isinstance(ag, dict)
    assert ag["n_units"] == 3 and ag["annotators"] == ["admin", "ann"]
    assert ag["raw_agreement"] == pytest.approx(2 / 3)
    assert ag["kappa"] == pytest.approx(0.4)  # po 2/3, pe (1/3·2/3 + 2/3·1/3) = 4/9 → (2/3-4/9)/(5/9)
    assert [d["unit_id"] for d in ag["disagreements"]] == ["unit-01"]
    assert api.client.get("/api/v1/criteria/nope/agreement", headers=api.auth).status_code == 404


def test_evaluators_and_latest_scores(api: Api) -> None:
    old_run, new_run_id = new_run(api.store, "backfill", RunParams()), None
    with api.store.session() as s:
        s.add(EvaluatorRow(name="pay-check", version="v1", kind="code", definition={}, status="active",
                           calibration={"kappa": 0.8}))
        for uid, score in (("unit-00", 0.0), ("unit-01", 1.0)):
            s.add(ScoreRow(run_id=old_run, unit_id=uid, evaluator_name="pay-check", evaluator_version="v1",
                           status="scored", score=score, verdict="pass" if score else "fail"))
    new_run_id = new_run(api.store, "gate", RunParams())  # run kinds are named once (RunKind)
    with api.store.session() as s:
        s.add(ScoreRow(run_id=new_run_id, unit_id="unit-00", evaluator_name="pay-check", evaluator_version="v1",
                       status="scored", score=1.0, verdict="pass"))
        s.add(ScoreRow(run_id=new_run_id, unit_id="unit-02", evaluator_name="pay-check", evaluator_version="v1",
                       status="error", score=None, verdict=None, reason="judge timeout"))
    evs = api.get("/evaluators")
    assert isinstance(evs, list) and len(evs) == 1
    ev = evs[0]
    assert (ev["name"], ev["version"], ev["status"], ev["calibration"]) == ("pay-check", "v1", "active", {"kappa": 0.8})
    assert ev["latest_run"]["run_id"] == new_run_id
    assert (ev["latest_run"]["scored"], ev["latest_run"]["failed"], ev["latest_run"]["passes"]) == (1, 1, 1)
    scores = api.get("/evaluators/pay-check/scores")
    assert isinstance(scores, list)
    assert [(s["unit_id"], s["run_id"], s["score"], s["status"]) for s in scores] == [
        ("unit-00", new_run_id, 1.0, "scored"), ("unit-01", old_run, 1.0, "scored"),
        ("unit-02", new_run_id, None, "error")]
    assert api.client.get("/api/v1/evaluators/nope/scores", headers=api.auth).status_code == 404


def test_openapi_schema_lists_the_endpoints(api: Api) -> None:
    schema = api.client.get("/api/v1/openapi.json").json()
    assert {"/signatures", "/units/{unit_id}", "/annotations", "/criteria", "/criteria/{name}/agreement",
            "/evaluators", "/evaluators/{name}/scores"} <= set(schema["paths"])
    assert "AnnotationIn" in schema["components"]["schemas"]
    assert api.client.get("/api/v1/docs").status_code == 200


def test_annotations_follow_the_criterion_s_scale(api: Api) -> None:
    levels = OrdinalScale(levels=tuple(OrdinalLevel(value=v, anchor=f"level {v}") for v in (1, 2, 3)))
    add_criterion(api.store, "Helpful.", name="helpful", scale=levels)
    add_criterion(api.store, "Better?", name="better", scale=PairwiseScale(allow_tie=False))
    post = {"unit_id": "unit-00", "criterion": "helpful"}
    made = api.client.post("/api/v1/annotations", headers=api.auth, json=post | {"value": "3"})
    assert made.status_code == 201, made.text
    assert (made.json()["value"], made.json()["label"]) == (3, None)
    pair = {"unit_id": "unit-00", "second_unit_id": "unit-01", "criterion": "better", "shown_order": "second-first"}
    made = api.client.post("/api/v1/annotations", headers=api.auth, json=pair | {"value": "2"})
    assert made.status_code == 201, made.text
    assert (made.json()["value"], made.json()["second_unit_id"], made.json()["shown_order"]) == (
        "second", "unit-01", "second-first")
    for body, reason in [(post | {"value": 4}, "4 is not a value of this ordinal scale (levels 1..3)"),
                         (post | {"label": "pass"}, "'pass' is not a value of this ordinal scale"),
                         (pair | {"value": "tie"}, "'tie' is not a value of this pairwise scale (first, second)"),
                         ({**pair, "second_unit_id": "nope", "value": "first"}, "unit not found: 'nope'"),
                         ({"unit_id": "unit-00", "criterion": "helpful"}, "needs a label"),
                         (post | {"value": 2, "label": "pass"}, "differ")]:
        r = api.client.post("/api/v1/annotations", headers=api.auth, json=body)
        assert r.status_code == 422 and reason in r.text, (body, r.text)
    assert [a.value for a in list_annotations(api.store)] == [3, "second"]
    crits = api.get("/criteria")
    assert isinstance(crits, list) and crits[0]["scale"]["levels"][2] == {"value": 3, "anchor": "level 3"}
