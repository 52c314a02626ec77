"""Extensions without installing anything: a ``*.dist-info`` folder with an ``entry_points.txt`` on ``sys.path``.

``importlib.metadata`` finds a distribution in any ``sys.path`` folder that holds its
``NAME-VERSION.dist-info``, so a test can add entry points (and the modules they name) for the
length of one test, with ``monkeypatch.syspath_prepend``. Nothing is pip-installed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from textwrap import dedent
from typing import Any

import pytest


def fake_distribution(folder: Path, name: str, entry_points: dict[str, dict[str, str]],
                      modules: dict[str, str]) -> Path:
    """Write ``folder/NAME-1.0.dist-info`` with ``entry_points`` ({group: {name: value}}) and ``modules``
    ({module name: source}); returns ``folder`` (to put on ``sys.path``)."""
    info = folder / f"{name}-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n", encoding="utf-8")
    groups = [f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(groups), encoding="utf-8")
    for module, source in modules.items():
        (folder / f"{module}.py").write_text(dedent(source), encoding="utf-8")
    return folder


@contextmanager
def installed(monkeypatch: pytest.MonkeyPatch, folder: Path, *registries: Any) -> Iterator[None]:
    """Put ``folder`` on ``sys.path`` and let ``registries`` load extensions afresh; afterwards every
    registry is as before (the extension's names gone, its modules unimported)."""
    saved = [(r, dict(r._entries), dict(r._broken), r._extensions_loaded) for r in registries]
    before = set(sys.modules)
    monkeypatch.syspath_prepend(str(folder))
    for r in registries:
        r._extensions_loaded = False
    try:
        yield
    finally:
        for r, entries, broken, loaded in saved:
            r._entries, r._broken, r._extensions_loaded = entries, broken, loaded
        for module in set(sys.modules) - before:
            if getattr(sys.modules[module], "__file__", "") and str(folder) in str(sys.modules[module].__file__):
                del sys.modules[module]
