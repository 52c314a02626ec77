"""Import AgentRx human failure annotations (microsoft/AgentRx ``ground_truth/*.json``).

Each annotated run has one or more failures (step, category, reasons) and one root
cause; annotators were people (AgentRx, arXiv 2602.02475). A run becomes a ``fail``
label against a whole-run criterion, with the failure summary and root cause as the
rationale; the categories are kept in ``extra``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from assay.annotations.model import Annotation
from assay.exceptions import IngestError

ANNOTATOR = "agentrx-annotators"


def read_ground_truth(path: Path | str) -> list[dict[str, Any]]:
    """Parse an AgentRx ground-truth file.

    Raises:
        IngestError: unreadable or not a list of annotated runs.
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise IngestError(str(p), f"cannot read AgentRx ground truth: {exc}") from exc
    if not isinstance(data, list) or not all(isinstance(r, dict) and "failures" in r for r in data):
        raise IngestError(str(p), "expected a list of runs with 'failures'")
    return data


def categories(run: dict[str, Any]) -> list[str]:
    """Failure categories of one annotated run, normalised to lower case."""
    return [str(f.get("failure_category", "")).strip().lower() for f in run.get("failures", [])]


def root_cause(run: dict[str, Any]) -> str | None:
    """The category of the failure marked as root cause."""
    rid = (run.get("root_cause") or {}).get("failure_id")
    return next((str(f.get("failure_category")) for f in run.get("failures", []) if f.get("failure_id") == rid), None)


def run_annotation(run: dict[str, Any], unit_id: str, criterion: str | None, label: str = "fail",
                   source: str = "agentrx:tau_ground_truth.json") -> Annotation:
    """One annotation for one annotated run (label ``fail`` unless told otherwise)."""
    rc = run.get("root_cause") or {}
    rationale = f"{run.get('failure_summary', '').strip()} Root cause: {rc.get('reason_for_root_cause', '').strip()}"
    return Annotation(unit_id=unit_id, annotator=ANNOTATOR, annotator_kind="human", label=label,
                      rationale=rationale.strip(), criterion=criterion, source=source,
                      extra={"categories": categories(run), "root_cause": root_cause(run),
                             "steps": [f.get("step_number") for f in run.get("failures", [])]})
