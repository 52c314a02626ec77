"""``assay signatures`` and ``assay queue``: failure signatures by impact, and review samples."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from assay._cli._common import console, get_ctx, handle_errors, progress_bar
from assay.signatures import (
    EmbeddingStats,
    Signature,
    build_signatures,
    failed_unit_ids,
    list_signatures,
    map_points,
    sample_queue,
)


def _table(signatures: list[Signature]) -> Table:
    table = Table("id", "size", "share", "status", "key", "label", "representative unit",
                  title="failure signatures by impact")
    for sig in signatures:
        table.add_row(str(sig.id), str(sig.size), f"{sig.share:.1%}", sig.status, escape(sig.structural_key),
                      escape(sig.label), escape(sig.representative_unit or ""))
    return table


@handle_errors
def signatures_cmd(
    ctx: typer.Context,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Cluster again even when signatures exist.",
                                          envvar="ASSAY_SIGNATURES_REBUILD")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the signatures as JSON.")] = False,
    limit: Annotated[int, typer.Option("--limit", "-n", min=1, help="Show at most this many signatures.",
                                       envvar="ASSAY_SIGNATURES_LIMIT")] = 20,
) -> None:
    """List failure signatures by impact (share of failed units), clustering first if needed.

    Failed units (outcome fail, or unknown with an error span) are keyed by failed tool and
    error type, embedded offline (cached: a re-run embeds only changed units) and clustered
    with HDBSCAN; units in no cluster are noise. Re-clustering keeps the id of every
    signature that still exists.
    """
    app = get_ctx(ctx)
    signatures = [] if rebuild else list_signatures(app.store)
    if not signatures:
        stats = EmbeddingStats()
        with progress_bar("embedding failed units", len(failed_unit_ids(app.store))) as advance:
            signatures = build_signatures(app.store, app.settings, progress=advance, stats=stats)
        if not as_json:
            console.print(f"embedded {stats.computed} units ({stats.cached} from cache)")
    if as_json:
        console.print_json(json.dumps([s.model_dump(mode="json") for s in signatures[:limit]]))
        return
    console.print(_table(signatures[:limit]))
    clustered = sum(s.size for s in signatures)
    total = len(map_points(app.store))
    console.print(f"{len(signatures)} signatures cover {clustered} of {total} failed units; "
                  f"{total - clustered} are noise (in no signature)")


@handle_errors
def queue_cmd(
    ctx: typer.Context,
    signature: Annotated[int, typer.Argument(help="Signature id (see `assay signatures`).")],
    size: Annotated[int, typer.Option("--size", "-n", min=1, help="Number of units to review.",
                                      envvar="ASSAY_QUEUE_SIZE")] = 10,
    as_json: Annotated[bool, typer.Option("--json", help="Print the unit ids as JSON.")] = False,
) -> None:
    """Print a review queue for one signature: units nearest its centroid, then spread across it.

    The sample is deterministic: the same signature and size give the same units.
    """
    app = get_ctx(ctx)
    unit_ids = sample_queue(app.store, signature, size)
    if as_json:
        console.print_json(json.dumps({"signature": signature, "unit_ids": unit_ids}))
        return
    table = Table("#", "unit", title=f"review queue: signature {signature}")
    for n, unit_id in enumerate(unit_ids, 1):
        table.add_row(str(n), escape(unit_id))
    console.print(table)
