"""Your own trace format without a package: a Python function given as ``module:function`` (``assay ingest
--reader``), or a declarative mapping file (``assay ingest --mapping``, :mod:`assay.traces.mapping`).

A reader function takes the path of one file and returns what the built-in readers return, a
:class:`~assay.traces.readers.ReadResult`, or simply the units it read (a :class:`~assay.traces.Unit`
or an iterable of them)::

    # my_reader.py
    from pathlib import Path
    from assay.traces import Span, Unit

    def read(path: Path) -> list[Unit]:
        ...

    # assay ingest --reader my_reader:read logs/        (my_reader importable, e.g. PYTHONPATH=.)
    # assay ingest --reader ./my_reader.py:read logs/   (or the file itself)

A function that raises :class:`~assay.exceptions.IngestError` (or any exception) costs only that file,
rejected with the reason; raising :class:`~assay.traces.readers.UnrecognisedFile` says "not my format"
(a file found in a folder is then skipped). A package registers a :class:`~assay.traces.TraceReader`
through the entry-point group ``assay.readers`` instead (auto-detected, usable as ``--format NAME``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from assay.exceptions import IngestError, UsageError
from assay.traces.model import Unit
from assay.traces.readers import ReadResult

FileReader = Callable[[Path], ReadResult]
"""Reads one file: ``path -> ReadResult`` (what :func:`assay.traces.ingest_paths` calls per file)."""


def load_reader(spec: str) -> FileReader:
    """The reader function named by ``spec``, wrapped so that its result is checked.

    Args:
        spec: ``package.module:function`` (importable from ``sys.path``) or ``path/to/file.py:function``;
            the function may be a dotted attribute (``module:Class.read``).

    Returns:
        a :data:`FileReader` whose ``format`` is the function's own (a returned ReadResult) or ``spec``.

    Raises:
        UsageError: no ``:`` in ``spec``, the module or file cannot be imported (the reason says why), the
            attribute is missing or not callable.
    """
    module_part, _, attr = spec.rpartition(":")
    if not module_part or not attr:
        raise UsageError(f"--reader {spec!r}: expected module:function (e.g. my_package.readers:read) or "
                         "path/to/file.py:function")
    target: Any = _import(module_part, spec)
    for part in attr.split("."):
        if not hasattr(target, part):
            raise UsageError(f"--reader {spec!r}: {module_part} has no attribute {attr!r}")
        target = getattr(target, part)
    if not callable(target):
        raise UsageError(f"--reader {spec!r}: {attr} is a {type(target).__name__}, not a function")
    function: Callable[[Path], object] = target
    return lambda path: checked_result(function(path), path, spec)


def _import(module_part: str, spec: str) -> object:
    if module_part.endswith(".py"):
        file = Path(module_part)
        if not file.is_file():
            raise UsageError(f"--reader {spec!r}: no such file {file}")
        name = f"assay_reader_{hashlib.sha256(str(file.resolve()).encode()).hexdigest()[:12]}"
        loader_spec = importlib.util.spec_from_file_location(name, file)
        if loader_spec is None or loader_spec.loader is None:
            raise UsageError(f"--reader {spec!r}: {file} cannot be imported as a Python module")
        module = importlib.util.module_from_spec(loader_spec)
        sys.modules[name] = module
        try:
            loader_spec.loader.exec_module(module)
        except Exception as exc:
            sys.modules.pop(name, None)
            raise UsageError(f"--reader {spec!r}: importing {file} failed: {type(exc).__name__}: {exc}") from exc
        return module
    try:
        return importlib.import_module(module_part)
    except ModuleNotFoundError as exc:
        raise UsageError(f"--reader {spec!r}: cannot import {module_part!r} ({exc}); put its folder on "
                         "PYTHONPATH (e.g. PYTHONPATH=. assay ingest ...) or give the file: path/to/file.py:function"
                         ) from exc
    except Exception as exc:
        raise UsageError(f"--reader {spec!r}: importing {module_part} failed: {type(exc).__name__}: {exc}") from exc


def checked_result(value: object, path: Path, reader: str) -> ReadResult:
    """Check what a reader function returned for ``path``: a :class:`ReadResult` is kept, a
    :class:`Unit` or an iterable of units becomes one (format ``reader``).

    Raises:
        IngestError: any other shape, naming the reader, what it returned and, for a list, the bad item.
    """
    if isinstance(value, ReadResult):
        bad = [type(u).__name__ for u in value.units if not isinstance(u, Unit)]
        if bad:
            raise IngestError(str(path), f"reader {reader} returned a ReadResult whose units hold a {bad[0]}, "
                                         "not an assay.traces.Unit")
        return value
    if isinstance(value, Unit):
        return ReadResult(path=str(path), format=reader, units=[value])
    if isinstance(value, Iterable) and not isinstance(value, str | bytes | dict):
        units = list(value)
        for n, unit in enumerate(units):
            if not isinstance(unit, Unit):
                raise IngestError(str(path), f"reader {reader} returned a list whose item {n} is a "
                                             f"{type(unit).__name__}, not an assay.traces.Unit")
        return ReadResult(path=str(path), format=reader, units=units)
    raise IngestError(str(path), f"reader {reader} returned a {type(value).__name__}; expected a ReadResult, "
                                 "a Unit or a list of Unit")
