"""``assay labels`` and ``assay criteria``: expert labels and rubric criteria."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import console, err_console, get_ctx, handle_errors
from assay._cli.exit_codes import ExitCode
from assay.annotations import PairwiseScale, Scale, add_criterion, export_labels, import_labels, list_criteria
from assay.annotations.scale import parse_scale_items

FIRST_REASONS = 5
"""Reasons printed with the error when nothing was imported."""

labels_app = typer.Typer(help="Import and export expert labels (JSONL or CSV).", no_args_is_help=True)
criteria_app = typer.Typer(help="Rubric criteria: what 'good' means for a signature.", no_args_is_help=True)


@labels_app.command("import")
@handle_errors
def labels_import(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(help="JSONL or CSV with unit, annotator, label (pass|fail) or value (on "
                                               "the criterion's scale: a level, a class, first|second|tie), "
                                               "second_unit (pairwise), severity (1-4), rationale, criterion.")],
) -> None:
    """Import labels; bad records are skipped with a reason, the rest are kept (append-only).

    A record that repeats a stored label (same unit, criterion, annotator, judgment, severity and
    rationale) is not written twice, so importing the same file again changes nothing.

    Exit code: 0 when at least one label was imported or every good record was already stored
    (skipped records are listed); 1 when nothing was imported (every record rejected, or the file
    holds none), with the count and the first reasons on stderr, so a CI step fails instead of
    passing silently (as `assay ingest` does);
    2 for usage errors (a missing file); 3 a failure.
    """
    result = import_labels(get_ctx(ctx).store, file)
    dups = f"; {len(result.duplicates)} already stored (not written again)" if result.duplicates else ""
    console.print(f"imported {result.imported} labels; skipped {len(result.skipped)}{dups}")
    for line, reason in result.skipped[:50]:
        console.print(f"  [yellow]skipped[/yellow] line {line}: {escape(reason)}")
    if len(result.skipped) > 50:
        console.print(f"  ... and {len(result.skipped) - 50} more skipped (the first 50 are listed)")
    if result.imported == 0 and not result.duplicates:
        err_console.print(f"[red]error:[/red] nothing imported: {escape(_nothing_imported(result.skipped))}")
        raise typer.Exit(ExitCode.CHECK_FAILED)


def _nothing_imported(skipped: list[tuple[int, str]]) -> str:
    """Why an import wrote nothing: the count of rejected records and the first reasons."""
    if not skipped:
        return "the file holds no label record"
    first = "; ".join(f"line {line}: {reason}" for line, reason in skipped[:FIRST_REASONS])
    return f"all {len(skipped)} record(s) rejected; first reasons: {first}"


@labels_app.command("export")
@handle_errors
def labels_export(
    ctx: typer.Context,
    fmt: Annotated[str, typer.Option("--format", help="jsonl or csv")] = "jsonl",
    criterion: Annotated[str | None, typer.Option(help="Only labels against this criterion.")] = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="File to write (default stdout).")] = None,
) -> None:
    """Export every label record with its provenance."""
    text = export_labels(get_ctx(ctx).store, fmt, criterion)
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        sys.stdout.write(text)


@criteria_app.command("add")
@handle_errors
def criteria_add(
    ctx: typer.Context,
    signature: Annotated[int, typer.Argument(help="Signature id the criterion is written for (0: none).")],
    text: Annotated[str, typer.Argument(help="The criterion statement.")],
    name: Annotated[str | None, typer.Option(help="Short stable name (default: from the text).")] = None,
    scale: Annotated[str | None, typer.Option(
        help="binary (pass/fail, the default for a new criterion), ordinal (--level), categorical (--class) or "
             "pairwise (first/second/tie). Omitted: an existing criterion keeps its scale.")] = None,
    level: Annotated[list[str] | None, typer.Option(
        help="Ordinal: one level with its anchor, 'VALUE=ANCHOR' (repeat, lowest first), e.g. --level '1=unusable'.")]
    = None,
    classes: Annotated[list[str] | None, typer.Option(
        "--class", help="Categorical: one class, 'NAME=DESCRIPTION' or 'NAME=DESCRIPTION|SCORE' (repeat); "
                        "SCORE in [0, 1] is what a unit of the class scores (default 0).")] = None,
    no_tie: Annotated[bool, typer.Option("--no-tie", help="Pairwise: 'tie' is not a valid label.")] = False,
) -> None:
    """Add a criterion (or a new version of a named one: other text or another scale)."""
    from assay._store.tables import SignatureRow
    from assay.exceptions import UsageError

    store = get_ctx(ctx).store
    if signature:
        with store.session() as s:
            if s.get(SignatureRow, signature) is None:
                raise UsageError(f"unknown signature {signature}: see `assay signatures` for the ids (0: none)")
    crit = add_criterion(store, text, name=name, signature_id=signature or None,
                         scale=_scale_option(scale, level or [], classes or [], no_tie))
    console.print(f"criterion {crit.name!r} (id {crit.id}) version {crit.version}, scale {_describe(crit.scale)}")


def _scale_option(kind: str | None, levels: list[str], classes: list[str], no_tie: bool) -> Scale | None:
    """The scale ``assay criteria add`` was given (None: none given).

    Raises:
        UsageError: levels or classes without their scale, or a scale that does not validate.
    """
    from pydantic import ValidationError

    from assay.exceptions import UsageError

    if kind is None:
        if levels or classes or no_tie:
            raise UsageError("--level, --class and --no-tie need --scale ordinal, categorical or pairwise")
        return None
    try:
        made = parse_scale_items(kind, "\n".join(levels + classes))
    except ValidationError as exc:
        raise UsageError(f"--scale {kind}: " + "; ".join(e["msg"] for e in exc.errors())) from None
    except ValueError as exc:
        raise UsageError(f"--scale {kind}: {exc}") from None
    return PairwiseScale(allow_tie=False) if kind == "pairwise" and no_tie else made


def _describe(scale: Scale) -> str:
    """``ordinal (1..5)``, ``categorical (a, b, c)``, ``binary`` ..."""
    return scale.kind if scale.kind == "binary" else f"{scale.kind} ({scale.describe()})"


@criteria_app.command("list")
@handle_errors
def criteria_list(ctx: typer.Context,
                  as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """List criteria."""
    crits = list_criteria(get_ctx(ctx).store)
    if as_json:
        console.print_json(json.dumps([c.model_dump(mode="json") for c in crits]))
        return
    table = Table("id", "name", "version", "scale", "signature", "text")
    for c in crits:
        table.add_row(str(c.id), c.name, str(c.version), _describe(c.scale), str(c.signature_id or ""), c.text)
    console.print(table)
