"""Public result types of the signatures stage."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

SignatureStatus = Literal["new", "existing", "retired"]


class Signature(BaseModel):
    """A failure signature: a cluster of failed units that fail the same way.

    Signatures are ranked by impact; today impact is volume (``size``, ``share``).
    """

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="stable id: kept across re-clustering while the cluster still exists")
    structural_key: str = Field(description="the most common structural key of the members, "
                                            "e.g. 'tool=book_reservation | error=payment amount does not add up'")
    label: str = Field(description="the key in words and the top c-TF-IDF keywords")
    keywords: list[str] = Field(description="top keywords by class-based TF-IDF, best first")
    size: int = Field(description="number of member units")
    share: float = Field(description="size / number of failed units clustered (0..1), noise included")
    representative_unit: str | None = Field(description="the member nearest the centroid")
    status: SignatureStatus = Field(description="'new' (first seen in the latest build), 'existing' (matched "
                                                "a stored signature) or 'retired' (no longer found)")
    unit_ids: list[str] = Field(default_factory=list, description="members, nearest the centroid first")


@dataclass
class EmbeddingStats:
    """How many vectors one embedding call computed and how many it found in the cache.

    Pass one to :func:`~assay.signatures.embed_units` or
    :func:`~assay.signatures.build_signatures`; the counts are added to it.
    """

    computed: int = 0
    cached: int = 0
