"""Token usage, cost and latency of a unit, summed once per trace; unknown stays unknown (None, never 0).

Where a span's usage comes from: its token counts (OTel ``gen_ai.usage.input_tokens`` /
``output_tokens``, OpenInference ``llm.token_count.prompt`` / ``completion``, Langfuse
``usageDetails``, an OpenAI or Anthropic ``usage`` object in a chat log, a mapping's ``usage``), and its
cost in USD: :attr:`Span.cost_usd` (Langfuse ``costDetails``, a mapping's ``usage.cost``), else the
attribute ``llm.cost.total`` (OpenInference) or ``gen_ai.usage.cost``.

**Counted once.** Instrumentations nest: an OpenInference AGENT or CHAIN span may repeat the token
counts of the LLM spans under it, a framework's LLM span may wrap the provider SDK's LLM span with the
same counts, a Langfuse AGENT observation may carry a total. So a span's usage is counted only when no
span below it (its descendants, by parent id, within its trace) has usage of its own: the usage sits
on the innermost spans that report it, and an outer figure is taken as their aggregate.

**Cost** of a counted span is the source's cost when given, else its tokens priced by the configured
price of its model (``[prices."MODEL"]`` in ``assay.toml``, :class:`~assay.settings.ModelPrice`),
else unknown. ``cost_usd`` sums what is known; ``spans_with_cost`` out of ``spans_with_usage`` says how
much of the usage it covers.

**Latency** of a unit is the sum over its traces of each trace's wall time (last span end minus first
span start), so a session's idle time between requests is not counted; unknown when every span's time
was numbered by a reader (``synthetic_time``) or no span ended.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from assay.traces.model import Span, Unit

COST_ATTRIBUTES = ("llm.cost.total", "gen_ai.usage.cost")
"""Span attributes read as the call's cost in USD when :attr:`Span.cost_usd` is unknown."""


class Price(Protocol):
    """A model's price in USD per million tokens (:class:`assay.settings.ModelPrice`)."""

    input_per_mtok: float
    output_per_mtok: float


class ModelTokens(BaseModel):
    """Tokens of counted spans of one model that the source gave no cost for (priced when read)."""

    model_config = ConfigDict(frozen=True)

    input_tokens: int = 0
    output_tokens: int = 0
    spans: int = 0


class UnitUsage(BaseModel):
    """A unit's usage (stored format, version 1). Sums are None when no counted span knew them.

    Coverage: ``spans_with_usage`` spans were counted, out of ``llm_spans`` model-call spans;
    ``spans_nested`` more had usage that repeats what spans below them report (not counted).
    """

    model_config = ConfigDict(frozen=True)

    version: int = 1
    input_tokens: int | None = Field(default=None, description="input (prompt) tokens, summed once per trace")
    output_tokens: int | None = Field(default=None, description="output (completion) tokens")
    cost_usd: float | None = Field(default=None, description="cost in USD: the source's, plus priced tokens")
    latency_s: float | None = Field(default=None, description="wall time in seconds, summed over the traces")
    llm_spans: int = Field(default=0, description="spans that are model calls (kind llm)")
    spans_with_usage: int = Field(default=0, description="spans whose usage was counted")
    spans_with_cost: int = Field(default=0, description="counted spans whose cost is known")
    spans_nested: int = Field(default=0, description="spans whose usage repeats their descendants' (not counted)")
    source_cost_usd: float | None = Field(default=None, description="the part of the cost the source gave")
    unpriced: dict[str, ModelTokens] = Field(default_factory=dict, description="model -> tokens of counted "
                                             "spans without a source cost, for pricing by configured prices")

    @property
    def known(self) -> bool:
        """True when any usage, cost or latency is known."""
        return self.spans_with_usage > 0 or self.latency_s is not None

    def priced(self, prices: Mapping[str, Price]) -> UnitUsage:
        """The usage with tokens that had no source cost priced by ``prices`` (model name -> price; the
        longest key that is a prefix of the model name wins, so ``gpt-4o-mini`` prices
        ``gpt-4o-mini-2024-07-18``)."""
        extra = 0.0
        n = 0
        for model, tokens in self.unpriced.items():
            price = price_for(model, prices)
            if price is not None:
                extra += (tokens.input_tokens * price.input_per_mtok
                          + tokens.output_tokens * price.output_per_mtok) / 1e6
                n += tokens.spans
        if not n:
            return self
        return self.model_copy(update={"cost_usd": (self.source_cost_usd or 0.0) + extra,
                                       "spans_with_cost": self.spans_with_cost + n})


def price_for(model: str, prices: Mapping[str, Price]) -> Price | None:
    """The price of ``model``: its own key, else the longest key it starts with; None when none fits."""
    if model in prices:
        return prices[model]
    fits = [k for k in prices if model.startswith(k)]
    return prices[max(fits, key=len)] if fits else None


def span_cost(span: Span) -> float | None:
    """The cost the source gave for this span, in USD, or None."""
    if span.cost_usd is not None:
        return span.cost_usd
    for key in COST_ATTRIBUTES:
        value = span.attributes.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                continue
    return None


def _has_usage(span: Span) -> bool:
    return span.input_tokens is not None or span.output_tokens is not None or span_cost(span) is not None


def counted_spans(spans: Iterable[Span]) -> tuple[list[Span], int]:
    """The spans whose usage counts (see the module docstring) and how many were left out as nested."""
    spans = list(spans)
    by_id = {(s.trace_id, s.span_id): s for s in spans}
    with_usage = [s for s in spans if _has_usage(s)]
    above: set[tuple[str, str]] = set()  # spans with usage somewhere below them
    for s in with_usage:
        parent = s.parent_span_id
        while parent and (s.trace_id, parent) in by_id and (s.trace_id, parent) not in above:
            above.add((s.trace_id, parent))
            parent = by_id[(s.trace_id, parent)].parent_span_id
    counted = [s for s in with_usage if (s.trace_id, s.span_id) not in above]
    return counted, len(with_usage) - len(counted)


def _sum(values: Iterable[int | float | None]) -> Any:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _latency_s(spans: list[Span]) -> float | None:
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for s in spans:
        if not s.synthetic_time and s.end_ns > 0:
            by_trace[s.trace_id].append(s)
    if not by_trace:
        return None
    return sum(max(s.end_ns for s in ss) - min(s.start_ns for s in ss) for ss in by_trace.values()) / 1e9


def unit_usage(unit: Unit | Iterable[Span]) -> UnitUsage:
    """A unit's usage from its spans (see the module docstring); prices are applied by :meth:`UnitUsage.priced`."""
    spans = list(unit.spans if isinstance(unit, Unit) else unit)
    counted, nested = counted_spans(spans)
    costs = [span_cost(s) for s in counted]
    unpriced: dict[str, dict[str, int]] = defaultdict(lambda: {"input_tokens": 0, "output_tokens": 0, "spans": 0})
    for s, cost in zip(counted, costs, strict=True):
        if cost is None and s.model and (s.input_tokens is not None or s.output_tokens is not None):
            entry = unpriced[s.model]
            entry["input_tokens"] += s.input_tokens or 0
            entry["output_tokens"] += s.output_tokens or 0
            entry["spans"] += 1
    source_cost = _sum(costs)
    return UnitUsage(input_tokens=_sum(s.input_tokens for s in counted),
                     output_tokens=_sum(s.output_tokens for s in counted), cost_usd=source_cost,
                     source_cost_usd=source_cost, latency_s=_latency_s(spans),
                     llm_spans=sum(s.kind == "llm" for s in spans), spans_with_usage=len(counted),
                     spans_with_cost=sum(c is not None for c in costs), spans_nested=nested,
                     unpriced={m: ModelTokens(**v) for m, v in unpriced.items()})


def usage_summary(usage: UnitUsage) -> str:
    """One line for people: ``12,480 in / 1,310 out tokens · $0.0412 · 8.3 s · usage on 4 of 4 model calls``;
    an unknown part says so (``cost unknown``)."""
    if not usage.known:
        return "token usage, cost and latency unknown (the source gave none)"
    parts = []
    if usage.input_tokens is not None or usage.output_tokens is not None:
        show = [f"{n:,} {side}" for n, side in ((usage.input_tokens, "in"), (usage.output_tokens, "out"))
                if n is not None]
        parts.append(" / ".join(show) + " tokens")
    else:
        parts.append("tokens unknown")
    parts.append(f"${usage.cost_usd:.4f}" if usage.cost_usd is not None else "cost unknown")
    parts.append(f"{usage.latency_s:.1f} s" if usage.latency_s is not None else "latency unknown")
    if usage.llm_spans or usage.spans_with_usage:
        parts.append(f"usage on {usage.spans_with_usage} of {usage.llm_spans} model calls")
    return " · ".join(parts)
