"""The exit codes of the ``assay`` command line, in one place.

==== ======================================================================================
code meaning
==== ======================================================================================
0    success
1    the command's check said no, by design: a gate regression or threshold miss
     (``assay gate``), a drift alert (``assay drift``), a failed check (``assay doctor``),
     nothing ingested (``assay ingest``), nothing imported (``assay labels import``: every record
     rejected). Never an error: a CI job may page on it.
2    usage, configuration or environment problem: a bad option or value, an unknown name, a
     missing workspace, an invalid ``assay.toml`` or evaluator file, a missing optional
     package or model file, a busy port (``UsageError``, ``EnvironmentProblem``, ``OSError``)
3    runtime failure: work started and failed (``RuntimeFailure``: judge errors, a model's
     process that died, unreadable input), the gate's "too many evaluator errors", a demo stage
     whose model failed, or a bug (an unexpected exception; its traceback is printed)
130  interrupted by Ctrl-C (``assay worker`` and ``assay serve`` first stop gracefully: the units
     in hand finish)
==== ======================================================================================

So ``assay gate`` exits 1 only for a regression or threshold miss: a crash of the gate itself
is 3, never mistaken for a verdict. The README's "The command line" section shows this table;
``tests/test_cli_exit_codes.py`` checks both.
"""

from __future__ import annotations

from enum import IntEnum

from assay.exceptions import EnvironmentProblem, UsageError


class ExitCode(IntEnum):
    """What an ``assay`` command's exit status means (see the module docstring)."""

    OK = 0
    CHECK_FAILED = 1
    USAGE = 2
    FAILURE = 3
    INTERRUPTED = 130


MEANINGS: dict[ExitCode, str] = {
    ExitCode.OK: "success",
    ExitCode.CHECK_FAILED: "the check said no: gate regression or threshold miss, drift alert, doctor check "
                           "failed, nothing ingested, nothing imported",
    ExitCode.USAGE: "usage, configuration or environment problem",
    ExitCode.FAILURE: "runtime failure: judge or model errors, too many evaluator errors, a crash",
    ExitCode.INTERRUPTED: "interrupted (Ctrl-C)",
}


def exit_code_for(exc: BaseException) -> ExitCode:
    """The exit code of a command that raised ``exc``.

    ``UsageError``, ``EnvironmentProblem`` and ``OSError`` (a path, a port) are 2; ``RuntimeFailure``
    and any other exception (a bug) are 3; ``KeyboardInterrupt`` is 130. Never 1: that code is kept
    for a check's "no".
    """
    if isinstance(exc, KeyboardInterrupt):
        return ExitCode.INTERRUPTED
    if isinstance(exc, UsageError | EnvironmentProblem | OSError):
        return ExitCode.USAGE
    return ExitCode.FAILURE
