"""The child side of :class:`assay._util.child.ChildProcess` (run as ``python -m assay._util.child_main``).

Reads one JSON object per line from stdin and answers on stdout (see :mod:`assay._util.child`).
Anything the served code prints goes to stderr, never into the protocol stream.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
from typing import Any


def _error(exc: BaseException) -> dict[str, Any]:
    attrs = {k: v for k, v in vars(exc).items() if isinstance(v, str | int | float | bool | type(None))}
    return {"error": {"type": type(exc).__name__, "message": str(exc), "attrs": attrs}}


def _build(spec: str, config: dict[str, Any]) -> Any:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)(config)


def main() -> None:
    """Serve until stdin closes."""
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # stray prints go to stderr, not the protocol
    obj: Any = None
    for line in sys.stdin:
        message = json.loads(line)
        try:
            if obj is None:
                obj = _build(message["factory"], message["config"])
                reply: dict[str, Any] = {"ready": getattr(obj, "info", None)}
            else:
                reply = {"ok": getattr(obj, message["op"])(**message.get("kwargs", {}))}
        except Exception as exc:  # every error goes back to the parent, typed by name
            reply = _error(exc)
        out.write(json.dumps(reply) + "\n")
        out.flush()
        if obj is None:  # the factory failed: nothing to serve
            sys.exit(1)


if __name__ == "__main__":
    main()
