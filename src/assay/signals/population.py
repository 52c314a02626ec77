"""Population detectors: cues that need the other units to be seen (a session far longer than its
workflow's norm).

``long_session`` is fitted on the units it sees (:func:`fit_norms`): units are grouped by
**workflow** (:func:`workflow_key`: the unit's source and the first call that changes something,
i.e. whose tool name does not start with a read-only verb such as ``get`` or ``search``); each group
of at least ``min_group`` units gets a norm, the median and scaled MAD of log(steps). A unit is
compared with its workflow's norm, else its source's, else its source family's (the reader, e.g.
``magentic-one`` when every file holds one run), else the norm over all units (no norm: no signal).
It fires when the robust z = (log n - median) / max(1.4826 * MAD, 0.1) is at least ``min_z`` and
n is at least ``min_ratio`` times the median. The 0.1 floor (about 10% of the length)
keeps a group whose units all have the same length from calling one extra step an outlier.
Source: the median/MAD outlier rule (Iglewicz and Hoaglin, 1993), on log length because session
lengths are right-skewed.
"""

from __future__ import annotations

import math
import re
import statistics
from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, ConfigDict

from assay.signals.registry import Finding, UnitView, detector
from assay.signals.settings import LongSessionSettings

MIN_SCALE = 0.1
"""Floor of the log-length scale (1.4826 * MAD), in natural-log units."""
_FIRST_WORD = re.compile(r"[_\-. /]|(?<=[a-z0-9])(?=[A-Z])")


class Norm(BaseModel):
    """Length norm of one group: median of ln(steps), its robust scale, and the number of units."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    median_log: float
    scale: float
    n: int


class SessionNorms(BaseModel):
    """What ``long_session`` learned from a batch: norms per workflow, per source and overall (stored
    format, version 1)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: Literal[1] = 1
    workflows: dict[str, Norm] = {}
    sources: dict[str, Norm] = {}
    families: dict[str, Norm] = {}
    overall: Norm | None = None

    def norm_for(self, view: UnitView, cfg: LongSessionSettings) -> tuple[str, Norm] | None:
        """The norm a unit is compared with and its group's name (workflow, source, source family or
        ``all``), or None when no group was big enough."""
        levels = ((self.workflows, workflow_key(view, cfg.read_only_prefixes)), (self.sources, view.source),
                  (self.families, source_family(view.source)))
        for norms, key in levels:
            if key in norms:
                return key, norms[key]
        return ("all", self.overall) if self.overall else None


def source_family(source: str) -> str:
    """The reader part of a source (``"tau-bench:airline.json"`` → ``"tau-bench"``): units of one format
    when each file holds one run."""
    return source.split(":", 1)[0]


def action_tool(view: UnitView, read_only_prefixes: Sequence[str]) -> str | None:
    """The first called tool whose name's first word (split at ``_ - . /`` and camelCase) is not a
    read-only verb; None when every call only looks things up."""
    for call in view.calls:
        name = call.tool_name or ""
        if _FIRST_WORD.split(name, maxsplit=1)[0].lower() not in read_only_prefixes:
            return name
    return None


def workflow_key(view: UnitView, read_only_prefixes: Sequence[str]) -> str:
    """``"SOURCE | ACTION"``: the unit's source and the first tool it calls that changes something
    (``(no action)`` when none does). The tool path part of a workflow (DESIGN.md)."""
    return f"{view.source} | {action_tool(view, read_only_prefixes) or '(no action)'}"


def _norm(sizes: list[int]) -> Norm:
    logs = [math.log(max(1, n)) for n in sizes]
    med = statistics.median(logs)
    mad = statistics.median(abs(v - med) for v in logs)
    return Norm(median_log=med, scale=max(1.4826 * mad, MIN_SCALE), n=len(sizes))


def fit_norms(views: Sequence[UnitView], cfg: LongSessionSettings) -> SessionNorms:
    """Fit the length norms on a batch of units (see the module docstring).

    Returns:
        a :class:`SessionNorms`; groups with fewer than ``min_group`` units get no norm of their own.
    """
    return fit_profiles([(v.source, workflow_key(v, cfg.read_only_prefixes), v.size) for v in views], cfg)


def fit_profiles(profiles: Sequence[tuple[str, str, int]], cfg: LongSessionSettings) -> SessionNorms:
    """:func:`fit_norms` from each unit's ``(source, workflow key, size)`` alone, so a store can refit the
    norms from what it kept of units it scanned before, without loading them again."""
    groups: dict[str, dict[str, list[int]]] = {"workflows": defaultdict(list), "sources": defaultdict(list),
                                               "families": defaultdict(list)}
    for source, workflow, size in profiles:
        groups["workflows"][workflow].append(size)
        groups["sources"][source].append(size)
        groups["families"][source_family(source)].append(size)
    fitted = {level: {k: _norm(v) for k, v in by_key.items() if len(v) >= cfg.min_group}
              for level, by_key in groups.items()}
    overall = _norm([p[2] for p in profiles]) if len(profiles) >= cfg.min_group else None
    return SessionNorms(overall=overall, **fitted)


@detector("long_session", "2", LongSessionSettings, fit=fit_norms)
def long_session(view: UnitView, cfg: LongSessionSettings, norms: SessionNorms) -> list[Finding]:
    """A unit with far more steps than its workflow's norm (robust z >= ``min_z`` and >= ``min_ratio`` x
    the median): one signal for the whole unit, stronger by ``per_z`` per z above ``min_z``."""
    found = norms.norm_for(view, cfg)
    if found is None or view.size == 0:
        return []
    group, norm = found
    z = (math.log(view.size) - norm.median_log) / norm.scale
    median = math.exp(norm.median_log)
    if z < cfg.min_z or view.size < cfg.min_ratio * median:
        return []
    strength = min(cfg.max_strength, cfg.strength + cfg.per_z * (z - cfg.min_z))
    return [Finding("long_session", strength, f"{view.size} steps, {view.size / median:.1f}x the median "
                    f"{median:.0f} of workflow '{group}' (n={norm.n}), robust z {z:.1f}")]
