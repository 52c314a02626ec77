"""Open coding by a judge model: for units whose cheap signals are ambiguous, plus a small random share, a
configured API judge writes one sentence, "what went wrong, or nothing", and names the step
(``[signals.open_coding]``, off by default).

**Which units.** A unit is a candidate when its failure score is in the ambiguous band
(``[signals] ambiguous_low`` <= score < ``ambiguous_high``: its cheap signals neither clearly fire nor are
clearly absent), or when a hash of its id falls below ``random_share`` (so clear cases are checked too);
ambiguous ones first, closest to ``fail_at`` first, at most ``max_units`` per call. A unit is coded once
per content, judge model and prompt version (the ``open_coding`` ledger).

**Cost.** Replies go through the judge cache (a re-run costs nothing). A daily budget, per UTC day, is
enforced before every call: ``daily_calls`` model calls (cache hits are free) and ``daily_usd`` dollars
from the judge's prices (``[judge] price_in_per_mtok`` / ``price_out_per_mtok``); a call is not made when
its worst case (prompt characters / 3 input tokens, ``max_tokens`` output tokens) would pass the limit.
Units left over wait for the next day. :class:`OpenCodingReport` says what was spent and what is left.

**Result.** A note saying something went wrong is a signal (kind ``open_coding_note``, strength
``[signals.open_coding] strength``, at the step named when it exists), with the judge model and the
prompt's version as lineage. A note saying nothing went wrong is kept in the ledger only.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib import resources

import jinja2
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select

from assay._store import Store
from assay._store.tables import OpenCodingRow, UnitRow
from assay.exceptions import ConfigError, JudgeError
from assay.models import JudgeClient, make_judge
from assay.models.cache import CachedJudge, cache_key
from assay.settings import JudgeSettings, Settings
from assay.signals.model import FailureSignal, JudgeLineage
from assay.signals.store import failure_scores, write_signals
from assay.traces.model import Unit
from assay.traces.timeline import render_timeline, step_timeline

PROMPT = resources.files("assay.signals").joinpath("prompts/open_coding.j2").read_text(encoding="utf-8")
PROMPT_VERSION = hashlib.sha256(PROMPT.encode()).hexdigest()[:12]
"""Content version of the open-coding prompt (part of each note's lineage)."""
SCHEMA = {"type": "object", "additionalProperties": False, "required": ["went_wrong", "note", "step"],
          "properties": {"went_wrong": {"type": "boolean"}, "note": {"type": "string"},
                         "step": {"type": ["integer", "null"]}}}
"""The JSON the judge answers with."""
_FENCE = re.compile(r"^```(?:json)?\s*|\s*```$")


def open_coding_judge(settings: Settings) -> JudgeSettings:
    """The judge of open coding: ``[judge]`` with ``[signals.open_coding] judge`` overrides.

    Raises:
        ConfigError: the local model (not up to it), or a ``daily_usd`` budget without the judge's prices.
    """
    cfg = settings.signals.open_coding
    js = JudgeSettings.model_validate({**settings.judge.model_dump(), **cfg.judge})
    if js.provider == "local":
        raise ConfigError("open coding needs an API judge (the local 135M model is not up to it): set "
                          "judge = {provider = 'openai', model = '...'} under [signals.open_coding] or in [judge]",
                          "signals.open_coding")
    if cfg.daily_usd is not None and (js.price_in_per_mtok is None or js.price_out_per_mtok is None):
        raise ConfigError("a daily_usd budget needs the judge's prices: set price_in_per_mtok and price_out_per_mtok "
                          "(USD per million tokens) in [judge] or [signals.open_coding] judge, or daily_usd = false",
                          "signals.open_coding")
    return js


class Budget(BaseModel):
    """One UTC day's open-coding budget: calls and dollars used and allowed."""

    model_config = ConfigDict(frozen=True)

    day: str = Field(description="UTC date, YYYY-MM-DD")
    calls: int = Field(description="model calls made today (cache hits not counted)")
    daily_calls: int
    usd: float = Field(description="dollars spent today, from the judge's prices")
    daily_usd: float | None = Field(description="None: no dollar limit")


class OpenCodingReport(BaseModel):
    """What one :func:`open_code` did."""

    model_config = ConfigDict(frozen=True)

    candidates: int = Field(description="units waiting to be coded (ambiguous or in the random share)")
    coded: int = Field(description="units the judge coded (cache hits included)")
    cached: int = Field(description="of those, replies from the judge cache (free)")
    notes: int = Field(description="notes saying something went wrong: signals written")
    errors: int = Field(description="calls that failed or replies that could not be read")
    left: int = Field(description="candidates not coded because the budget or max_units was reached")
    stopped: str | None = Field(description="why coding stopped early (the budget), or None")
    budget: Budget


def budget(store: Store, settings: Settings, day: str | None = None) -> Budget:
    """Today's (or ``day``'s) calls and dollars used against ``[signals.open_coding]``'s limits."""
    cfg = settings.signals.open_coding
    day = day or datetime.now(UTC).strftime("%Y-%m-%d")
    with store.session() as s:
        calls, usd = s.execute(select(func.count(), func.coalesce(func.sum(OpenCodingRow.cost_usd), 0.0))
                               .where(OpenCodingRow.day == day, OpenCodingRow.cached.is_(False))).one()
    return Budget(day=day, calls=int(calls), daily_calls=cfg.daily_calls, usd=float(usd or 0.0),
                  daily_usd=cfg.daily_usd)


def _share(unit_id: str) -> float:
    return int.from_bytes(hashlib.sha256(f"open_coding\x00{unit_id}".encode()).digest()[:8], "big") / 2.0**64


def candidates(store: Store, settings: Settings, model: str, unit_ids: Sequence[str] | None = None) -> list[str]:
    """Units to code, in order (see module docstring), not yet coded at their content by ``model`` with
    this prompt version."""
    cfg, sig = settings.signals.open_coding, settings.signals
    ids = list(unit_ids) if unit_ids is not None else store.select_unit_ids()
    with store.session() as s:
        hashes = dict(s.execute(select(UnitRow.unit_id, UnitRow.content_hash)).all())
        done = set(s.execute(select(OpenCodingRow.unit_id, OpenCodingRow.content_hash).where(
            OpenCodingRow.model == model, OpenCodingRow.prompt_version == PROMPT_VERSION,
            OpenCodingRow.status == "coded")).all())
    todo = [u for u in ids if (u, hashes.get(u, "")) not in done]
    scores = failure_scores(store, todo)
    ambiguous = sorted((u for u in todo if scores[u].ambiguous), key=lambda u: (abs(scores[u].score - sig.fail_at), u))
    rest = [u for u in todo if not scores[u].ambiguous and _share(u) < cfg.random_share]
    return ambiguous + rest


def _messages(unit: Unit, js: JudgeSettings) -> tuple[list[dict[str, str]], int]:
    steps = step_timeline(unit)
    text = jinja2.Template(PROMPT).render(timeline=render_timeline(steps, max_chars=js.max_prompt_chars))
    return [{"role": "user", "content": text}], len(steps)


def _parse(text: str) -> tuple[bool, str, int | None] | None:
    try:
        data = json.loads(_FENCE.sub("", text.strip()))
    except json.JSONDecodeError:
        return None
    if not isinstance(data, dict) or not isinstance(data.get("went_wrong"), bool):
        return None
    step = data.get("step")
    return data["went_wrong"], " ".join(str(data.get("note") or "").split()), step if isinstance(step, int) else None


class _Coder:
    """One :func:`open_code` call's state: the judge, the budget left, the counts."""

    def __init__(self, store: Store, settings: Settings, judge: JudgeClient, js: JudgeSettings, day: str) -> None:
        self.store, self.settings, self.judge, self.js, self.day = store, settings, judge, js, day
        used = budget(store, settings, day)
        self.calls, self.usd = used.calls, used.usd
        self.coded = self.cached = self.notes = self.errors = 0
        self.stopped: str | None = None

    def over_budget(self, prompt_chars: int) -> str | None:
        cfg = self.settings.signals.open_coding
        if self.calls + 1 > cfg.daily_calls:
            return f"daily budget of {cfg.daily_calls} calls reached"
        worst = self._cost(prompt_chars // 3 + 1, self.js.max_tokens)
        if cfg.daily_usd is not None and self.usd + worst > cfg.daily_usd:
            return f"daily budget of ${cfg.daily_usd:g} reached (${self.usd:.4f} spent, next call up to ${worst:.4f})"
        return None

    def _cost(self, tokens_in: int, tokens_out: int) -> float:
        p_in, p_out = self.js.price_in_per_mtok or 0.0, self.js.price_out_per_mtok or 0.0
        return (tokens_in * p_in + tokens_out * p_out) / 1e6

    def _cached(self, messages: list[dict[str, str]]) -> bool:
        if not isinstance(self.judge, CachedJudge):
            return False
        return self.judge.lookup(cache_key(self.judge.model_name, messages, SCHEMA, self.judge.parameters)) is not None

    def code(self, unit: Unit, content_hash: str) -> bool:
        """Code one unit; False when the budget stops it (nothing recorded)."""
        messages, n_steps = _messages(unit, self.js)
        if not self._cached(messages):
            self.stopped = self.over_budget(len(messages[0]["content"]))
            if self.stopped:
                return False
        row = OpenCodingRow(unit_id=unit.unit_id, content_hash=content_hash, model=self.judge.model_name,
                            prompt_version=PROMPT_VERSION, day=self.day, status="error", cached=False)
        signal = None
        try:
            reply = self.judge.complete(messages, SCHEMA)
        except JudgeError as exc:
            row.note = str(exc)[:2000]
            self.calls, self.errors = self.calls + 1, self.errors + 1
        else:
            row.cached, row.input_tokens, row.output_tokens = reply.cached, reply.input_tokens, reply.output_tokens
            if not reply.cached:
                cost = reply.cost_usd if reply.cost_usd is not None else self._cost(
                    reply.input_tokens or 0, reply.output_tokens or 0)
                row.cost_usd = cost
                self.calls, self.usd = self.calls + 1, self.usd + cost
            signal = self._read(row, reply.text, unit.unit_id, n_steps)
        with self.store.session() as s:
            s.add(row)
            write_signals(s, [signal] if signal is not None else [])
        return True

    def _read(self, row: OpenCodingRow, text: str, unit_id: str, n_steps: int) -> FailureSignal | None:
        parsed = _parse(text)
        if parsed is None:
            row.status, row.note = "unparsed", text[:2000]
            self.errors += 1
            return None
        went_wrong, note, step = parsed
        row.status, row.went_wrong, row.note = "coded", went_wrong, note[:2000]
        row.step = step if step is not None and 1 <= step <= n_steps else None
        self.coded += 1
        self.cached += bool(row.cached)
        if not went_wrong:
            return None
        self.notes += 1
        cfg = self.settings.signals
        evidence = note if len(note) <= cfg.evidence_chars else note[:cfg.evidence_chars - 1] + "…"
        return FailureSignal(unit_id=unit_id, source="open_coding", kind="open_coding_note",
                             strength=cfg.open_coding.strength, evidence=evidence or "something went wrong",
                             step=row.step, time_ns=time.time_ns(),
                             lineage=JudgeLineage(model=self.judge.model_name, prompt_version=PROMPT_VERSION))


def open_code(store: Store, settings: Settings, judge: JudgeClient | None = None,
              unit_ids: Sequence[str] | None = None, day: str | None = None) -> OpenCodingReport:
    """Code the candidates (module docstring) within today's budget.

    Args:
        settings: the workspace settings (``[signals]``, ``[judge]``).
        judge: the judge to ask (default: :func:`open_coding_judge`'s, through the judge cache).
        unit_ids: consider only these units (default: all).
        day: the UTC day the budget counts against (default: today).

    Raises:
        ConfigError: see :func:`open_coding_judge`.
    """
    js = open_coding_judge(settings)
    day = day or datetime.now(UTC).strftime("%Y-%m-%d")
    coder = _Coder(store, settings, judge or make_judge(js, store), js, day)
    todo = candidates(store, settings, coder.judge.model_name, unit_ids)
    limit = settings.signals.open_coding.max_units
    with store.session() as s:
        hashes = dict(s.execute(select(UnitRow.unit_id, UnitRow.content_hash)).all())
    done = 0
    for unit_id in todo[:limit]:
        if not coder.code(store.unit(unit_id), hashes.get(unit_id, "")):
            break
        done += 1
    return OpenCodingReport(candidates=len(todo), coded=coder.coded, cached=coder.cached, notes=coder.notes,
                            errors=coder.errors, left=len(todo) - done, stopped=coder.stopped,
                            budget=budget(store, settings, day))

