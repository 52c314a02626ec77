"""A judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server, ...)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Literal

from assay.exceptions import ConfigError, JudgeError, MissingDependency
from assay.models.base import ChatMessage, JudgeReply
from assay.models.runtime import TransientJudgeError, judge_target, parse_retry_after, status_error
from assay.settings import JudgeSettings

_UNSUPPORTED_STRICT_KEYWORDS = frozenset({"minLength", "maxLength"})
_TRANSIENT_STATUS = frozenset({408, 409, 429})
_REJECTED_FORMAT = frozenset({400, 422, 500})  # llama_cpp.server answers a bad body with 500
StructuredMode = Literal["json_schema", "json_object", "none"]
_STRUCTURED_MODES: tuple[StructuredMode, ...] = ("json_schema", "json_object", "none")


class OpenAICompatibleJudge:
    """A judge calling ``chat.completions`` through the ``openai`` SDK.

    With a JSON schema the request carries ``response_format={"type": "json_schema", ...}``
    (strict; length keywords that strict mode rejects are dropped). A server that rejects that
    form (HTTP 400/422, or 500 from ``llama_cpp.server``, which accepts only ``json_object``,
    naming ``response_format``) is asked again
    with ``{"type": "json_object", "schema": ...}`` (llama.cpp's grammar-constrained JSON), then
    without ``response_format`` (the prompt still asks for the JSON shape); the first form the
    server accepts is kept for later calls (``structured_mode``). Each call is bounded by
    ``timeout_s`` seconds; the SDK retries connection errors, 408/409/429 and 5xx up to
    ``max_retries`` times with exponential backoff.

    Args:
        settings: ``model``, ``base_url`` (None: api.openai.com), ``api_key``,
            ``temperature``, ``max_tokens``, ``seed`` (sent when set), ``timeout_s``, ``max_retries``.
        http_client: an ``httpx2.Client`` for the SDK (tests pass one with a mock transport).
        max_retries: the SDK's own retries (default ``settings.max_retries``); :func:`make_judge`
            passes 0 and retries in :class:`~assay.models.ResilientJudge` instead. Failures that
            may pass on retry (408/409/429/5xx, timeouts, connection errors) raise
            :class:`~assay.models.TransientJudgeError` with the ``Retry-After`` delay.

    Raises:
        MissingDependency: the ``openai`` package is not installed.
        ConfigError: no API key and no custom ``base_url``.
    """

    def __init__(self, settings: JudgeSettings, http_client: Any = None, max_retries: int | None = None) -> None:
        try:
            import openai
        except ImportError as exc:
            raise MissingDependency("openai", "pip install openai") from exc
        if not settings.api_key and not settings.base_url:
            raise ConfigError("judge.api_key is not set (ASSAY_JUDGE__API_KEY or OPENAI_API_KEY)", "judge settings")
        self.settings = settings
        self.model_name = settings.model
        self._openai = openai
        self.structured_mode: StructuredMode = "json_schema"
        self._client = openai.OpenAI(api_key=settings.api_key or "not-needed", base_url=settings.base_url,
                                     timeout=settings.timeout_s,
                                     max_retries=settings.max_retries if max_retries is None else max_retries,
                                     http_client=http_client)

    @property
    def endpoint(self) -> str:
        """The URL called (``base_url``, or the SDK's default ``https://api.openai.com/v1``)."""
        return str(self._client.base_url).rstrip("/")

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Everything besides model name and prompt that shapes the reply (part of cache keys)."""
        params = {"provider": "openai", "base_url": self.settings.base_url, "temperature": self.settings.temperature,
                  "max_tokens": self.settings.max_tokens}
        return params if self.settings.seed is None else {**params, "seed": self.settings.seed}

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        """Send one chat completion request (see :class:`assay.models.JudgeClient`).

        Raises:
            JudgeError: timeout, transport or API error after retries, or an empty reply.
        """
        start = time.perf_counter()
        while True:
            mode = self.structured_mode if json_schema is not None else "none"
            try:
                response = self._create(messages, response_format(mode, json_schema))
                break
            except self._openai.APIStatusError as exc:
                if mode == "none" or not _rejects_format(exc.status_code, str(exc)):
                    raise self._error(exc) from exc
                # this server rejects the structured-output form: fall back to the next one, keep it
                self.structured_mode = _STRUCTURED_MODES[_STRUCTURED_MODES.index(mode) + 1]
            except self._openai.OpenAIError as exc:
                raise self._error(exc) from exc
        latency = time.perf_counter() - start
        return self._reply(response, latency)

    def _create(self, messages: list[ChatMessage], fmt: dict[str, Any] | None) -> Any:
        """POST /chat/completions through the SDK's request path (auth, timeout, status errors, retries),
        without its typed request transform and response models: the reply is read as plain JSON
        (a third of the client's CPU per call, which counts at 16 calls in flight)."""
        body: dict[str, Any] = {"model": self.model_name, "messages": messages,
                                "temperature": self.settings.temperature, "max_tokens": self.settings.max_tokens}
        if self.settings.seed is not None:
            body["seed"] = self.settings.seed
        if fmt is not None:
            body["response_format"] = fmt
        return self._client.post("/chat/completions", body=body, cast_to=dict,
                                 options={"timeout": self.settings.timeout_s})

    def _reply(self, data: Any, latency: float) -> JudgeReply:
        """The :class:`JudgeReply` of a chat-completion response body.

        Raises:
            JudgeError: no choice, or a choice without text content.
        """
        if not isinstance(data, dict):
            raise JudgeError(f"judge returned no JSON object: {str(data)[:200]!r}", self.model_name)
        try:
            text = data["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            text = None
        if not isinstance(text, str):
            raise JudgeError("judge returned no content", self.model_name)
        usage = data.get("usage") or {}
        return JudgeReply(text=text, model=data.get("model") or self.model_name,
                          input_tokens=usage.get("prompt_tokens"), output_tokens=usage.get("completion_tokens"),
                          latency_s=latency)

    def _error(self, exc: Exception) -> JudgeError:
        """The assay error for an SDK exception: transient (worth a retry) or permanent."""
        target = judge_target(self.model_name, self.endpoint)
        if isinstance(exc, self._openai.APITimeoutError):
            return TransientJudgeError(f"{target}: call timed out after {self.settings.timeout_s} s", self.model_name)
        if isinstance(exc, self._openai.APIConnectionError):
            return TransientJudgeError(f"{target}: connection failed: {exc}", self.model_name)
        message = f"{target}: call failed: {type(exc).__name__}: {exc}"
        if isinstance(exc, self._openai.APIStatusError):
            status = exc.status_code
            if status in _TRANSIENT_STATUS or status >= 500:
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                return TransientJudgeError(message, self.model_name, status, retry_after)
            return status_error(message, self.model_name, self.endpoint, status)
        return JudgeError(message, self.model_name)


def _rejects_format(status: int, message: str) -> bool:
    """An HTTP 400/422 (500 from llama_cpp.server) that names ``response_format`` (not some other bad field)."""
    return status in _REJECTED_FORMAT and ("response_format" in message or "json_schema" in message)


def response_format(mode: StructuredMode, json_schema: dict[str, Any] | None) -> dict[str, Any] | None:
    """The ``response_format`` request field for a structured-output mode (None: send none).

    ``json_schema``: OpenAI strict structured outputs; ``json_object``: JSON mode with a
    ``schema`` (llama.cpp server, Anyscale); ``none``: plain text. Both schemas drop string
    length keywords (:func:`strict_schema`; llama.cpp spells ``maxLength`` out as one grammar
    rule per character).
    """
    if json_schema is None or mode == "none":
        return None
    if mode == "json_schema":
        return {"type": "json_schema", "json_schema": {"name": "judgement", "strict": True,
                                                       "schema": strict_schema(json_schema)}}
    return {"type": "json_object", "schema": strict_schema(json_schema)}


def strict_schema(schema: dict[str, Any]) -> dict[str, Any]:
    """A copy of ``schema`` without the keywords OpenAI strict structured outputs reject (string lengths)."""
    def clean(node: Any, names: bool = False) -> Any:
        if isinstance(node, dict):
            return {k: clean(v, names=k == "properties" and not names) for k, v in node.items()
                    if names or k not in _UNSUPPORTED_STRICT_KEYWORDS}
        if isinstance(node, list):
            return [clean(v) for v in node]
        return node

    result: dict[str, Any] = clean(schema)
    return result
