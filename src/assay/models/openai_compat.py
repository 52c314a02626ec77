"""A judge behind any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp server, ...)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from assay.exceptions import ConfigError, JudgeError, MissingDependency
from assay.models.base import ChatMessage, JudgeReply
from assay.models.runtime import TransientJudgeError, parse_retry_after
from assay.settings import JudgeSettings

_UNSUPPORTED_STRICT_KEYWORDS = frozenset({"minLength", "maxLength"})
_TRANSIENT_STATUS = frozenset({408, 409, 429})


class OpenAICompatibleJudge:
    """A judge calling ``chat.completions`` through the ``openai`` SDK.

    With a JSON schema the request carries ``response_format={"type": "json_schema", ...}``
    (strict; length keywords that strict mode rejects are dropped). Each call is bounded by
    ``timeout_s`` seconds; the SDK retries connection errors, 408/409/429 and 5xx up to
    ``max_retries`` times with exponential backoff.

    Args:
        settings: ``model``, ``base_url`` (None: api.openai.com), ``api_key``,
            ``temperature``, ``max_tokens``, ``timeout_s``, ``max_retries``.
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
        self._client = openai.OpenAI(api_key=settings.api_key or "not-needed", base_url=settings.base_url,
                                     timeout=settings.timeout_s,
                                     max_retries=settings.max_retries if max_retries is None else max_retries,
                                     http_client=http_client)

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Everything besides model name and prompt that shapes the reply (part of cache keys)."""
        return {"provider": "openai", "base_url": self.settings.base_url, "temperature": self.settings.temperature,
                "max_tokens": self.settings.max_tokens}

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        """Send one chat completion request (see :class:`assay.models.JudgeClient`).

        Raises:
            JudgeError: timeout, transport or API error after retries, or an empty reply.
        """
        kwargs: dict[str, Any] = {}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_schema", "json_schema": {
                "name": "judgement", "strict": True, "schema": strict_schema(json_schema)}}
        start = time.perf_counter()
        try:
            response = self._client.chat.completions.create(
                model=self.model_name, messages=messages,  # type: ignore[arg-type]
                temperature=self.settings.temperature, max_tokens=self.settings.max_tokens,
                timeout=self.settings.timeout_s, **kwargs)
        except self._openai.APITimeoutError as exc:
            raise TransientJudgeError(f"judge call timed out after {self.settings.timeout_s} s",
                                      self.model_name) from exc
        except self._openai.APIConnectionError as exc:
            raise TransientJudgeError(f"judge connection failed: {exc}", self.model_name) from exc
        except self._openai.APIStatusError as exc:
            status = exc.status_code
            message = f"judge call failed: {type(exc).__name__}: {exc}"
            if status in _TRANSIENT_STATUS or status >= 500:
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                raise TransientJudgeError(message, self.model_name, status, retry_after) from exc
            raise JudgeError(message, self.model_name) from exc
        except self._openai.OpenAIError as exc:
            raise JudgeError(f"judge call failed: {type(exc).__name__}: {exc}", self.model_name) from exc
        latency = time.perf_counter() - start
        if not response.choices or response.choices[0].message.content is None:
            raise JudgeError("judge returned no content", self.model_name)
        usage = response.usage
        return JudgeReply(text=response.choices[0].message.content, model=response.model or self.model_name,
                          input_tokens=usage.prompt_tokens if usage else None,
                          output_tokens=usage.completion_tokens if usage else None, latency_s=latency)


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
