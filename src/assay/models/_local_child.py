"""The child side of the local judge: loads the GGUF model with llama-cpp-python and answers calls.

Runs inside ``python -m assay._util.child_main`` (see :mod:`assay._util.child`), so a crash in
llama.cpp's native code kills only this process.
"""

from __future__ import annotations

import time
from typing import Any

from assay.exceptions import EnvironmentProblem, JudgeError, MissingDependency
from assay.models.base import ChatMessage

INSTALL_HINT = "pip install 'assay[local]'"


class LlamaServer:
    """One loaded model; ``complete`` and ``count_tokens`` are called by the parent by name."""

    def __init__(self, config: dict[str, Any]) -> None:
        try:
            import llama_cpp
        except ImportError as exc:
            raise MissingDependency("llama_cpp", INSTALL_HINT) from exc
        start = time.perf_counter()
        try:
            self.llama = llama_cpp.Llama(model_path=config["model_path"], n_ctx=config["n_ctx"],
                                         n_threads=config["n_threads"], n_threads_batch=config["n_threads"],
                                         n_gpu_layers=0, seed=config["seed"], verbose=False)
        except (ValueError, RuntimeError) as exc:
            raise EnvironmentProblem(f"cannot load judge model {config['model_path']}: {exc}") from exc
        self.config = config
        self.info = {"load_s": time.perf_counter() - start, "llama_cpp_version": llama_cpp.__version__,
                     "system_info": llama_cpp.llama_print_system_info().decode("utf-8", errors="replace").strip()}

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` without BOS (special tokens parsed)."""
        return len(self.llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> dict[str, Any]:
        """One chat completion: ``{"text", "input_tokens", "output_tokens", "latency_s"}``.

        Raises:
            JudgeError: the prompt does not fit, or llama.cpp refused it.
        """
        from assay.models.local import fit_messages

        cfg = self.config
        kwargs: dict[str, Any] = {}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        fitted = fit_messages(self.llama, messages, cfg["n_ctx"] - cfg["max_tokens"], cfg["model"])
        start = time.perf_counter()
        try:
            out: Any = self.llama.create_chat_completion(
                messages=fitted,  # type: ignore[arg-type]
                temperature=cfg["temperature"], max_tokens=cfg["max_tokens"], seed=cfg["seed"], **kwargs)
        except (ValueError, RuntimeError) as exc:
            raise JudgeError(f"local judge failed: {exc}", cfg["model"]) from exc
        usage = out.get("usage") or {}
        return {"text": out["choices"][0]["message"].get("content") or "", "latency_s": time.perf_counter() - start,
                "input_tokens": usage.get("prompt_tokens"), "output_tokens": usage.get("completion_tokens")}


def serve(config: dict[str, Any]) -> LlamaServer:
    """Factory named in the child's init message."""
    return LlamaServer(config)
