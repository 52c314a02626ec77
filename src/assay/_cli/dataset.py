"""``assay dataset``: ground-truth datasets that travel (export to one file in git, import into any store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import console, get_ctx, handle_errors

dataset_app = typer.Typer(help="Ground-truth datasets: export one to a file for git, import it into any store.",
                          no_args_is_help=True)


@dataset_app.command("export")
@handle_errors
def dataset_export(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The criterion whose ground-truth dataset to export.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default: "
                                                "datasets/NAME.jsonl in the workspace; .gz: gzipped).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the manifest as JSON.")] = False,
) -> None:
    """Write a criterion's ground-truth dataset as one self-contained JSON Lines file: a manifest (dataset
    version, content hashes), the criterion, the labelled units with their spans, and every label with its
    annotator and criterion version. `assay dataset import` rebuilds it in any store with the same unit
    ids and dataset version."""
    from assay.calibration import export_dataset_file

    app = get_ctx(ctx)
    path = output or app.settings.workspace / "datasets" / f"{name}.jsonl"
    manifest = export_dataset_file(app.store, name, path)
    if as_json:
        console.print_json(manifest.model_dump_json())
        return
    m = manifest
    console.print(f"wrote {escape(str(path))}: criterion {escape(m.criterion)} v{m.criterion_version}, dataset "
                  f"version {m.dataset_version} ({m.items} items, {m.counts['unit']} units, {m.counts['label']} "
                  f"labels), content {m.content_hash[:12]}", highlight=False)


@dataset_app.command("import")
@handle_errors
def dataset_import(
    ctx: typer.Context,
    files: Annotated[list[Path], typer.Argument(help="Dataset files written by assay dataset export.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print what was imported as JSON.")] = False,
) -> None:
    """Rebuild datasets in this store: units, criterion, labels and the same dataset version. Each file is
    checked whole before anything is written (format, content hashes, the criterion, that the labels
    rebuild the dataset, that its version is free); importing again changes nothing.

    Exit codes: 0 imported (or already there); 2 a file that fails a check (nothing of it written)."""
    from assay.calibration import import_dataset_file

    store = get_ctx(ctx).store
    results = [import_dataset_file(store, f) for f in files]
    if as_json:
        console.print_json(json.dumps([r.model_dump() for r in results]))
        return
    for r in results:
        state = "new" if r.dataset_created else "already here"
        console.print(f"{escape(r.path)}: dataset version {r.dataset_version} ({state}) of criterion "
                      f"{escape(r.criterion)} v{r.criterion_version}: {r.units_new} units and {r.labels_new} labels "
                      "new", highlight=False)


@dataset_app.command("list")
@handle_errors
def dataset_list(ctx: typer.Context,
                 as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Dataset versions in this store, in version order, with criterion, items and content hash."""
    from sqlalchemy import select

    from assay._store.tables import CriterionRow, DatasetRow

    with get_ctx(ctx).store.session() as s:
        rows = [(r.version, name or "", len(r.items or []), r.content_hash) for r, name in s.execute(
            select(DatasetRow, CriterionRow.name).outerjoin(CriterionRow, CriterionRow.id == DatasetRow.criterion_id)
            .order_by(DatasetRow.version))]
    if as_json:
        console.print_json(json.dumps([{"version": v, "criterion": c, "items": n, "content_hash": h}
                                       for v, c, n, h in rows]))
        return
    table = Table("version", "criterion", "items", "content hash", title="ground-truth datasets")
    for v, c, n, h in rows:
        table.add_row(str(v), escape(c), str(n), h[:16])
    console.print(table)
