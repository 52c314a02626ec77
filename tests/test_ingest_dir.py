"""``assay ingest DIR``: every supported file, recursively, gzip too; unrecognised files skipped with a reason."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from assay._cli.main import app
from assay._store import Store
from assay.exceptions import UsageError
from assay.traces import IngestResult, ingest_paths

from .conftest import DATA

runner = CliRunner()
LANGFUSE = DATA / "langfuse-framework-traces" / "worker" / "src" / "__tests__" / "chatml" / "framework-traces"
SAMPLES = DATA / "otel-genai-openinference-samples"


def _ingest(ws: Path, *args: str, exit_code: int = 0) -> dict[str, Any]:
    result = runner.invoke(app, ["--workspace", str(ws), "ingest", *args, "--json"])
    assert result.exit_code == exit_code, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]


def _otlp(trace: str, span: str, attrs: dict[str, str]) -> dict[str, Any]:
    return {"resourceSpans": [{"scopeSpans": [{"spans": [{
        "traceId": trace, "spanId": span, "name": "chat", "startTimeUnixNano": "1760000000000000000",
        "endTimeUnixNano": "1760000000000000005",
        "attributes": [{"key": k, "value": {"stringValue": v}} for k, v in attrs.items()]}]}]}]}


OPENAI = {"id": "c-1", "messages": [{"role": "user", "content": "Refund order 42"},
                                    {"role": "assistant", "content": "Done."}]}
ANTHROPIC = {"system": "Be brief.", "messages": [{"role": "user", "content": "Hi"},
                                                 {"role": "assistant", "content": [{"type": "text", "text": "Hey"}]}]}


def _tree(root: Path) -> None:
    (root / "otlp" / "nested" / "deeper").mkdir(parents=True)
    (root / "chat").mkdir()
    (root / ".hidden").mkdir()
    (root / "otlp" / "export.json").write_text(json.dumps(_otlp("a" * 32, "1" * 16, {"session.id": "s-1"})))
    collector = [_otlp("b" * 32, "2" * 16, {}), _otlp("b" * 32, "3" * 16, {})]  # Collector file exporter
    (root / "otlp" / "nested" / "collector.jsonl").write_text("\n".join(json.dumps(x) for x in collector) + "\n")
    with gzip.open(root / "otlp" / "nested" / "deeper" / "zipped.json.gz", "wt") as f:
        f.write(json.dumps(_otlp("c" * 32, "4" * 16, {})))
    (root / "chat" / "openai.ndjson").write_text(json.dumps(OPENAI) + "\n")
    (root / "chat" / "claude.log").write_text(json.dumps(ANTHROPIC) + "\n" + json.dumps(ANTHROPIC | {"id": "x"}))
    with gzip.open(root / "chat" / "more.jsonl.gz", "wt") as f:
        f.write(json.dumps(OPENAI | {"id": "c-2"}) + "\n")
    shutil.copy(LANGFUSE / "beeai-2025-08-01.trace.json", root / "beeai.json")
    # files to skip, each for its own reason
    (root / "notes.txt").write_text("Meeting notes: nothing to ingest here.\n")
    (root / "app.log").write_text('{"level": "info", "msg": "started"}\n{"level": "warn", "msg": "slow"}\n')
    (root / "config.json").write_text(json.dumps({"theme": "dark"}))
    (root / "picture.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    (root / "fake.json.gz").write_bytes(b"not gzip at all")
    (root / ".hidden" / "secret.json").write_text(json.dumps(_otlp("d" * 32, "5" * 16, {})))
    (root / "broken.json").write_text('{"resourceSpans": [')  # a trace file cut short: rejected


def test_ingest_dir_takes_every_supported_file_recursively(tmp_path: Path) -> None:
    root = tmp_path / "traces"
    _tree(root)
    ws = tmp_path / "ws"
    summary = _ingest(ws, str(root))
    formats = {Path(f["path"]).relative_to(root).as_posix(): f["format"] for f in summary["files"]}
    assert formats == {
        "otlp/export.json": "otlp-json", "otlp/nested/collector.jsonl": "otlp-json",
        "otlp/nested/deeper/zipped.json.gz": "otlp-json", "chat/openai.ndjson": "openai-chat",
        "chat/claude.log": "anthropic-messages", "chat/more.jsonl.gz": "openai-chat", "beeai.json": "langfuse"}
    skipped = {Path(r["path"]).relative_to(root).as_posix(): r["reason"] for r in summary["skipped"]}
    assert sorted(skipped) == ["app.log", "config.json", "fake.json.gz", "notes.txt", "picture.png"]
    assert "unsupported file type .png" in skipped["picture.png"]
    assert "not JSON" in skipped["notes.txt"] and "not a gzip file" in skipped["fake.json.gz"]
    assert "neither an OTLP export" in skipped["app.log"] and "unknown format" in skipped["config.json"]
    assert [Path(r["path"]).name for r in summary["rejected"]] == ["broken.json"]
    store = Store(f"sqlite:///{ws / '.assay' / 'assay.db'}")
    ids = store.select_unit_ids()
    assert "session/s-1" in ids and f"trace/{'b' * 32}" in ids and f"trace/{'c' * 32}" in ids
    assert len(store.unit(f"trace/{'b' * 32}").spans) == 2
    assert f"trace/{'d' * 32}" not in ids  # hidden folders are passed over
    assert summary["units_new"] == len(ids) and summary["spans_duplicate"] == 0
    store.close()
    again = _ingest(ws, str(root))
    assert again["spans_new"] == 0 and again["spans_duplicate"] == summary["spans_new"]


def test_explicitly_named_unrecognised_file_is_rejected_not_skipped(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("plain prose")
    summary = _ingest(tmp_path / "ws", str(notes), exit_code=1)  # nothing ingested → exit 1
    assert summary["skipped"] == [] and summary["files"] == []
    assert [r["path"] for r in summary["rejected"]] == [str(notes)]


def test_real_sample_folder_never_crashes_and_accounts_for_every_file(tmp_path: Path) -> None:
    # this folder holds no ingestible file (fixtures of single spans, docs): exit 1, every file listed
    summary = _ingest(tmp_path / "ws", str(SAMPLES), exit_code=1)
    seen = [f["path"] for f in summary["files"]] + [r["path"] for r in summary["skipped"]]
    seen += [r["path"] for r in summary["rejected"] if r["path"] not in seen]
    files = [p for p in SAMPLES.rglob("*") if p.is_file() and not any(
        part.startswith(".") for part in p.relative_to(SAMPLES).parts)]
    assert sorted(set(seen)) == sorted(str(p) for p in files)
    assert any(r["path"].endswith(".md") and "unsupported file type .md" in r["reason"] for r in summary["skipped"])


def test_human_summary_lists_skipped_files(tmp_path: Path) -> None:
    root = tmp_path / "t"
    root.mkdir()
    (root / "x[1].png").write_bytes(b"\x89PNG")
    result = runner.invoke(app, ["--workspace", str(tmp_path / "ws"), "ingest", str(root)])
    assert result.exit_code == 1, result.output  # no ingestible file in the folder
    assert "nothing ingested" in result.output
    assert "skipped: 1 file(s)" in result.output and "x[1].png" in result.output


def test_ingest_paths_from_python_returns_a_typed_result(tmp_path: Path) -> None:
    """The public function ``assay ingest`` prints: the same tree, straight into a store, no CLI."""
    root = tmp_path / "traces"
    _tree(root)
    store = Store(f"sqlite:///{tmp_path / 'direct.db'}")
    seen: list[tuple[int, int]] = []
    result = ingest_paths([root], store, progress=lambda done, total: seen.append((done, total)))
    assert isinstance(result, IngestResult) and result.nothing_ingested() is None
    assert len(result.files) == 7 and {f.format for f in result.files} >= {"otlp-json", "langfuse", "openai-chat"}
    assert result.units_new == len(store.select_unit_ids()) == result.units_read
    assert [Path(r.path).name for r in result.rejected] == ["broken.json"] and len(result.skipped) == 5
    assert seen[0] == (0, 12) and seen[-1] == (12, 12)  # every file with a supported suffix (not picture.png)
    printed = _ingest(tmp_path / "ws", str(root))
    # the CLI prints exactly this, plus what became of the evaluation results the traces carry (the Langfuse
    # export's two scores: no external evaluator takes them here)
    assert printed.pop("evaluations")["unmatched"] == {"hallucination": 1, "toxicity": 1}
    assert result.to_json() == printed
    store.close()
    with pytest.raises(UsageError, match="no such file or directory"):
        ingest_paths([tmp_path / "missing"], store)


def test_a_missing_path_or_nothing_to_ingest_leaves_no_store_behind(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    ws = tmp_path / "ws"
    assert runner.invoke(app, ["--workspace", str(ws), "ingest", str(tmp_path / "missing.json")]).exit_code == 2
    assert runner.invoke(app, ["--workspace", str(ws), "ingest", str(empty)]).exit_code == 1
    assert not (ws / ".assay").exists()


def test_a_chat_record_names_its_dataset_item_for_pairing(tmp_path: Path) -> None:
    from assay.traces import read_file

    msgs = [{"role": "user", "content": "refund?"}, {"role": "assistant", "content": "done"}]
    lines = [{"id": "a", "task_id": 7, "messages": msgs}, {"id": "b", "metadata": {"dataset_item_id": "q-2"},
                                                          "messages": msgs},
             {"id": "c", "task_id": True, "metadata": {"task_id": ""}, "messages": msgs}]
    path = tmp_path / "chat.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines), encoding="utf-8")
    units = {u.unit_id: u for u in read_file(path).units}
    assert units["openai-chat/a"].attributes["task_id"] == "7"
    assert units["openai-chat/b"].attributes["dataset_item_id"] == "q-2"
    assert units["openai-chat/b"].attributes["metadata"] == {"dataset_item_id": "q-2"}
    assert not {"task_id", "dataset_item_id", "item_id"} & set(units["openai-chat/c"].attributes)
