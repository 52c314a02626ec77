"""``assay agreement``: human-human agreement per criterion, on its scale."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from assay._cli._common import console, get_ctx, handle_errors
from assay.annotations import get_criterion, list_annotations, list_criteria
from assay.annotations.agreement import N_BOOT, HumanAgreement, PairAgreement, Statistic, human_agreement


@handle_errors
def agreement_cmd(
    ctx: typer.Context,
    criterion: Annotated[str | None, typer.Argument(help="Criterion name or id (default: every criterion).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON (a list without CRITERION).")]
    = False,
    n_boot: Annotated[int, typer.Option(min=1, help="Bootstrap resamples per 95% interval.",
                                        envvar="ASSAY_AGREEMENT_N_BOOT")] = N_BOOT,
    seed: Annotated[int, typer.Option(help="Seed of the bootstrap.", envvar="ASSAY_AGREEMENT_SEED")] = 0,
) -> None:
    """How far the human annotators agree on a criterion, on its scale, from their current labels.

    For every criterion (or one): annotators, items labelled by two or more, the class distribution,
    Cohen's kappa for every annotator pair (a matrix), Fleiss' kappa, Krippendorff's alpha (nominal;
    ordinal and interval on ordinal levels; ordinal on pairwise preferences), quadratic weighted kappa
    on ordinal scales, each with n and a bootstrap 95% CI. A statistic that is undefined (one class
    only, no item labelled twice) says why in words. Exit 0; exit 2 for an unknown criterion.
    """
    store = get_ctx(ctx).store
    crits = [get_criterion(store, criterion)] if criterion else list_criteria(store)
    reports = [human_agreement(list_annotations(store, c.name), c, n_boot=n_boot, seed=seed) for c in crits]
    if as_json:
        data = [r.model_dump(mode="json") for r in reports]
        typer.echo(json.dumps(data[0] if criterion else data, indent=2))
        return
    if not reports:
        console.print("no criteria yet (assay criteria add)")
    for r in reports:
        print_agreement(r)


def _stat(s: Statistic | None) -> str:
    if s is None:
        return "-"
    if s.value is None:
        return f"undefined: {s.note}"
    ci = f" [{s.low:.3f}, {s.high:.3f}]" if s.low is not None and s.high is not None else f" ({s.note})"
    return f"{s.value:.3f}{ci}  n {s.n}"


def print_agreement(r: HumanAgreement) -> None:
    """Print one criterion's agreement: summary, statistics with CIs, the kappa matrix, the pairs."""
    console.print(f"[bold]{escape(r.criterion)}[/bold] v{r.criterion_version} ({r.scale}): "
                  f"{len(r.annotators)} annotator(s), {r.n_units} item(s) with labels from two or more, "
                  f"{r.n_labels} current label(s), {r.stale_labels} stale left out")
    console.print("  distribution: " + (", ".join(f"{escape(k)} {v}" for k, v in r.distribution.items()) or "-"))
    for note in r.notes:
        console.print(f"  [yellow]note[/yellow]: {escape(note)}")
    table = Table("statistic", "value [95% CI]  n", box=box.SIMPLE_HEAD, show_edge=False)
    table.add_row("Fleiss' kappa", escape(_stat(r.fleiss_kappa)))
    for level, stat in r.alpha.items():
        table.add_row(f"Krippendorff's alpha ({level})", escape(_stat(stat)))
    table.add_row("raw agreement (annotator pairs)",
                  "-" if r.raw_agreement is None else f"{r.raw_agreement:.3f}")
    console.print(table)
    if len(r.annotators) >= 2:
        console.print("  Cohen's kappa per annotator pair:")
        console.print(_matrix(r, "kappa"))
        if r.scale == "ordinal":
            console.print("  quadratic weighted kappa per annotator pair:")
            console.print(_matrix(r, "weighted_kappa"))
        pairs = Table("pair", "n", "agreement", "Cohen's kappa [95% CI]", *(
            ["weighted kappa [95% CI]"] if r.scale == "ordinal" else []), box=box.SIMPLE_HEAD, show_edge=False)
        for p in r.pairs:
            pairs.add_row(escape(f"{p.first} / {p.second}"), str(p.n),
                          "-" if p.agreement is None else f"{p.agreement:.3f}", escape(_stat(p.kappa)),
                          *([escape(_stat(p.weighted_kappa))] if r.scale == "ordinal" else []))
        console.print(pairs)
    if r.disagreements:
        verdict = sum(d.kind == "verdict" for d in r.disagreements)
        console.print(f"  {len(r.disagreements)} disagreement(s): {verdict} on the verdict, "
                      f"{len(r.disagreements) - verdict} on severity only (the app's agreement page adjudicates them)")


def _matrix(r: HumanAgreement, field: str) -> Table:
    """Annotators x annotators, the pair's statistic in each cell (the diagonal is '-')."""
    cell: dict[tuple[str, str], PairAgreement] = {}
    for p in r.pairs:
        cell[(p.first, p.second)] = cell[(p.second, p.first)] = p
    table = Table("", *(escape(a) for a in r.annotators), box=box.SIMPLE_HEAD, show_edge=False)
    for a in r.annotators:
        row = []
        for b in r.annotators:
            stat: Statistic | None = getattr(cell[(a, b)], field) if a != b else None
            row.append("-" if stat is None else "undef." if stat.value is None else f"{stat.value:.3f}")
        table.add_row(escape(a), *row)
    return table
