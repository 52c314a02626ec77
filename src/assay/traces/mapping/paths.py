"""The path language of trace mappings: dotted keys with list indexes and ``[*]``.

=====================  =======================================================================
``$``                  the value itself (the whole document, record or event)
``a.b.c``              key ``c`` of key ``b`` of key ``a``
``a[0]``, ``a[-1]``    the first / last item of list ``a``
``a[*]``, ``[*]``      every item of list ``a`` / of the value itself (a path may fan out once or more)
``a["x.y"]``           a key holding dots, spaces or brackets (``'x.y'`` works too)
=====================  =======================================================================

A key that is missing, a ``null``, an index past the end or a step into a non-object yields
nothing (never an error); :func:`first` then returns None. JMESPath would also do, but it is not a
dependency of assay and these five forms cover record, event and field lookups.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any

_TOKEN = re.compile(r"""\.?(?P<key>[^.\[\]"']+)|\[(?P<index>-?\d+)\]|\[(?P<star>\*)\]"""
                    r"""|\[(?P<q>["'])(?P<quoted>.*?)(?P=q)\]""")
Step = str | int | None
"""One step: a key (str), a list index (int) or every item (None)."""


@dataclass(frozen=True)
class Path:
    """A parsed path; ``text`` is what was written."""

    text: str
    steps: tuple[Step, ...]

    def values(self, data: Any) -> list[Any]:
        """Every value the path selects in ``data`` (several when it holds ``[*]``), nulls left out."""
        found = [data]
        for step in self.steps:
            found = [v for item in found for v in _step(item, step)]
        return [v for v in found if v is not None]

    def first(self, data: Any) -> Any:
        """The first selected value, or None when the path selects nothing."""
        values = self.values(data)
        return values[0] if values else None

    @property
    def fans_out(self) -> bool:
        """True when the path holds ``[*]`` (it may select several values)."""
        return None in self.steps


def _step(item: Any, step: Step) -> list[Any]:
    if isinstance(step, str):
        return [item[step]] if isinstance(item, dict) and step in item else []
    if not isinstance(item, list):
        return []
    if step is None:
        return list(item)
    return [item[step]] if -len(item) <= step < len(item) else []


@functools.lru_cache(maxsize=1024)
def parse_path(text: str) -> Path:
    """Parse a path (see the module docstring).

    Raises:
        ValueError: a syntax error, naming the position.
    """
    body = text.strip()
    if body in ("$", ""):
        return Path(text, ())
    body = body[1:] if body.startswith("$.") or body.startswith("$[") else body
    steps: list[Step] = []
    pos = 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if m is None or (m.group("key") is not None and pos > 0 and body[pos] != "." and steps):
            raise ValueError(f"bad path {text!r} at character {pos + 1}: expected .key, [N], [*] or [\"key\"]")
        if m.group("key") is not None:
            steps.append(m.group("key").strip())
        elif m.group("index") is not None:
            steps.append(int(m.group("index")))
        elif m.group("star"):
            steps.append(None)
        else:
            steps.append(m.group("quoted"))
        pos = m.end()
    return Path(text, tuple(steps))
