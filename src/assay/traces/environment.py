"""Where a unit ran: its **environment** (production, staging, evaluation, simulation ...) and its
**release** (the app version that produced it).

Read from the data first, in this order:

1. the unit's own attributes (file readers put them there: a chat-log record's ``environment`` /
   ``release`` fields, a mapping's ``environment`` / ``release`` paths, a Langfuse trace's
   ``environment`` / ``release``), under the OTel names below;
2. its spans' attributes, earliest span first: OTel resource attributes ``deployment.environment.name``
   (semantic conventions v1.27+), the older ``deployment.environment``, and ``service.version``. The
   OTLP readers copy these three resource attributes onto each span of the resource (a span's own
   attribute of the same name wins), so they survive the store, which keeps spans, not resources.

Only when the data names none does an ingest option (``assay ingest --env NAME --release X``) or the
API key's bound environment (``assay keys create --env NAME``, applied by the OTLP receiver) fill in,
via :func:`with_environment` / :func:`Environment.or_else`. A unit whose environment is named nowhere
is stored without one; the ``[environments] default`` setting says which environment it counts as
(production by default, so a team that never sets one sees everything as production, as before).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from assay.traces.model import Span, Unit

ENV_ATTRIBUTES = ("deployment.environment.name", "deployment.environment")
"""Attributes naming the environment, newest semantic convention first."""
RELEASE_ATTRIBUTES = ("service.version",)
"""Attributes naming the release (the app's version)."""
RESOURCE_ATTRIBUTES = ENV_ATTRIBUTES + RELEASE_ATTRIBUTES
"""The resource attributes the OTLP readers copy onto spans."""
MAX_LENGTH = 100
"""Longest environment or release name kept (longer ones are cut)."""


class Environment(NamedTuple):
    """An environment name and a release, each None when unknown."""

    name: str | None = None
    release: str | None = None

    def or_else(self, fallback: Environment | None) -> Environment:
        """Each part of ``self``, else the fallback's (what the data says wins)."""
        if fallback is None:
            return self
        return Environment(self.name or fallback.name, self.release or fallback.release)


def _text(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    text = str(value).strip()
    return text[:MAX_LENGTH] or None


def attributes_environment(attrs: Mapping[str, Any]) -> Environment:
    """The environment and release named by one attribute dict (None where it names none)."""
    name = next((v for k in ENV_ATTRIBUTES if (v := _text(attrs.get(k))) is not None), None)
    release = next((v for k in RELEASE_ATTRIBUTES if (v := _text(attrs.get(k))) is not None), None)
    return Environment(name, release)


def spans_environment(spans: Iterable[Span]) -> Environment:
    """The first environment and release the spans name, earliest span first."""
    found = Environment()
    for span in sorted(spans, key=lambda s: (s.start_ns, s.span_id)):
        found = found.or_else(attributes_environment(span.attributes))
        if found.name and found.release:
            break
    return found


def unit_environment(unit: Unit) -> Environment:
    """The unit's environment and release: its own attributes, else its spans' (module docstring)."""
    return attributes_environment(unit.attributes).or_else(spans_environment(unit.spans))


def with_environment(unit: Unit, fallback: Environment | None) -> Unit:
    """``unit`` with the fallback's environment and release set as attributes where its data names none."""
    if fallback is None or not (fallback.name or fallback.release):
        return unit
    have = unit_environment(unit)
    extra: dict[str, str] = {}
    if have.name is None and fallback.name:
        extra[ENV_ATTRIBUTES[0]] = fallback.name
    if have.release is None and fallback.release:
        extra[RELEASE_ATTRIBUTES[0]] = fallback.release
    return unit.model_copy(update={"attributes": {**unit.attributes, **extra}}) if extra else unit


def resource_attributes(resource: Mapping[str, Any]) -> dict[str, Any]:
    """The environment and release attributes of an OTLP resource, to copy onto its spans."""
    return {k: resource[k] for k in RESOURCE_ATTRIBUTES if _text(resource.get(k)) is not None}


def record_environment(record: Mapping[str, Any]) -> dict[str, str]:
    """Unit attributes from a file record's ``environment`` (or ``env``) and ``release`` fields, at its top
    level or under ``metadata`` (OTel names: ``deployment.environment.name``, ``service.version``)."""
    meta = record.get("metadata")
    out: dict[str, str] = {}
    for source in (record, meta if isinstance(meta, dict) else {}):
        env = next((v for k in ("environment", "env", *ENV_ATTRIBUTES) if (v := _text(source.get(k)))), None)
        release = next((v for k in ("release", *RELEASE_ATTRIBUTES) if (v := _text(source.get(k)))), None)
        if env and ENV_ATTRIBUTES[0] not in out:
            out[ENV_ATTRIBUTES[0]] = env
        if release and RELEASE_ATTRIBUTES[0] not in out:
            out[RELEASE_ATTRIBUTES[0]] = release
    return out
