"""Public result types of the signatures stage."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

from assay.signatures.mix import mix_text

SignatureStatus = Literal["new", "existing", "retired"]
Lifecycle = Literal["new", "escalating", "criterion_written", "monitored", "resolved", "regressed"]
"""Where a signature stands in the loop (:mod:`assay.signatures.lifecycle` defines each state)."""
Assignment = Literal["cluster", "noise", "assigned", "new"]
"""How a failed unit stands: in a cluster of the latest build, noise of that build, assigned
to an existing signature since (incremental), or *new*: seen since and near no signature."""
FlagSource = Literal["rule", "feedback", "person"]


class SignatureUsage(BaseModel):
    """Token usage, cost and latency of a signature's members (:mod:`assay.traces.usage`); each sum or
    mean is over the members that know it (``units_with_*``), None when none does. Not part of impact:
    what a failure costs to run says nothing of how bad it is for the user, so it is shown beside."""

    model_config = ConfigDict(frozen=True)

    units_with_cost: int = Field(0, description="members whose cost is known")
    cost_usd_sum: float | None = Field(None, description="summed cost of the members, USD")
    cost_usd_mean: float | None = Field(None, description="mean cost per member, USD")
    units_with_tokens: int = Field(0, description="members whose token usage is known")
    tokens_sum: int | None = Field(None, description="input + output tokens of the members")
    tokens_mean: float | None = Field(None, description="mean input + output tokens per member")
    units_with_latency: int = Field(0, description="members whose latency is known")
    latency_s_mean: float | None = Field(None, description="mean latency per member, seconds")


class Signature(BaseModel):
    """A failure signature: a cluster of failed units that fail the same way.

    Signatures are ranked by ``impact``: units x severity weight x recency (see
    :mod:`assay.signatures.impact`).
    """

    model_config = ConfigDict(frozen=True)

    id: int = Field(description="stable id: kept across re-clustering while the cluster still exists")
    structural_key: str = Field(description="the members' common key, field by field ('*': no majority), e.g. "
                                            "'tool=book_reservation | error=payment amount does not add up | "
                                            "step=9-16 | retrieval=none | outcome=fail'")
    label: str = Field(description="what went wrong, in words: the members' leading failure signal, the key "
                                   "in words and two c-TF-IDF keywords, e.g. 'tool error: book_reservation failed: "
                                   "payment amount does not add up, about total, paid'; no other live signature has "
                                   "the same key and label")
    keywords: list[str] = Field(description="top keywords by class-based TF-IDF, best first")
    size: int = Field(description="number of member units (clustered plus assigned since)")
    share: float = Field(description="size / number of failed units known to the signatures (0..1), "
                                     "noise and new units included")
    impact: float = Field(0.0, description="sum over members of severity weight x recency (unitless, >= 0)")
    severity: float = Field(0.0, description="mean severity weight of the members (0.5 .. 4; 1 = default)")
    assigned: int = Field(0, description="members assigned incrementally since the latest build")
    first_seen: datetime | None = Field(None, description="earliest member time (UTC)")
    last_seen: datetime | None = Field(None, description="latest member time (UTC)")
    representative_unit: str | None = Field(description="the member nearest the centroid")
    status: SignatureStatus = Field(description="'new' (first seen in the latest build), 'existing' (matched "
                                                "a stored signature) or 'retired' (no longer found)")
    unit_ids: list[str] = Field(default_factory=list, description="members, nearest the centroid first")
    environments: dict[str, int] = Field(default_factory=dict, description="members per environment (a member "
                                         "stored without one counts as [environments] default), largest first")
    usage: SignatureUsage = Field(default_factory=SignatureUsage, description="the members' token usage, cost "
                                  "and latency (sum and mean over the members that know it)")
    lifecycle: Lifecycle = Field("new", description="where it stands in the loop: new, escalating, criterion_written, "
                                 "monitored, resolved or regressed (assay.signatures.lifecycle)")
    signal_mix: dict[str, int] = Field(default_factory=dict, description="signal kind -> members with at least one "
                                       "signal of that kind, most first (assay.signatures.mix)")

    @computed_field(  # type: ignore[prop-decorator]
        description="the signal mix in words, e.g. '31 escalations, 12 thumbs-down, 4 evaluator fails'")
    @property
    def signal_mix_text(self) -> str:
        return mix_text(self.signal_mix)


@dataclass
class EmbeddingStats:
    """How many vectors one embedding call computed, how many it found in the cache, and the
    time spent computing them.

    Pass one to :func:`~assay.signatures.embed_units` or
    :func:`~assay.signatures.build_signatures`; the counts are added to it.
    """

    computed: int = 0
    cached: int = 0
    seconds: float = 0.0
    """Wall time spent loading the model and encoding (s); cache reads and writes excluded."""


class UpdateResult(BaseModel):
    """What one incremental update (:func:`~assay.signatures.update_signatures`) did."""

    model_config = ConfigDict(frozen=True)

    assigned: dict[str, int] = Field(default_factory=dict,
                                     description="{unit id: signature id} of units put in an existing signature")
    new_units: list[str] = Field(default_factory=list,
                                 description="units near no signature, marked new (still pending after the update)")
    new_signatures: list[int] = Field(default_factory=list,
                                      description="ids of signatures formed from pending new units")


class SevereFlag(BaseModel):
    """Why a unit is in the rare-severe queue: one rule hit, a low feedback score, or a person."""

    model_config = ConfigDict(frozen=True)

    source: FlagSource
    reason: str = Field(description="e.g. \"tool 'refund' called\", 'user.feedback.score = 0.1 < 0.3'")
    flagged_by: str = Field("", description="who flagged (person flags); empty for rules")
    created_at: datetime | None = None


class SevereItem(BaseModel):
    """One unit of the rare-severe review queue."""

    model_config = ConfigDict(frozen=True)

    unit_id: str
    flags: list[SevereFlag]
    signature_id: int | None = Field(description="its signature, None when noise, new or not failed")
    signature_size: int = Field(0, description="size of that signature (0 without one)")
    reviewed: bool = Field(description="a human annotated the unit after it was first flagged")
