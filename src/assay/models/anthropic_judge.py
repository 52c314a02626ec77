"""A judge behind Anthropic's Messages API (the ``anthropic`` SDK, imported lazily)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from assay.exceptions import ConfigError, JudgeError, MissingDependency
from assay.models.base import ChatMessage, JudgeReply
from assay.models.runtime import TransientJudgeError, judge_target, parse_retry_after, status_error
from assay.settings import JudgeSettings

_INSTALL_HINT = "pip install 'assay[anthropic]'"
_TRANSIENT_STATUS = frozenset({408, 409, 429})


class AnthropicJudge:
    """A judge calling ``messages.create`` through the ``anthropic`` SDK.

    System messages go to the ``system`` parameter; the reply text is the concatenation of
    the reply's text blocks. ``json_schema`` is not sent (the prompt asks for the JSON shape
    and :func:`assay.evaluators.parse_verdict` reads it strictly); nor is ``temperature`` (the
    SDK's Messages API no longer takes it for current models). Each call is bounded by
    ``timeout_s`` seconds. Failures that may pass on retry (408/409/429/5xx incl. 529
    overloaded, timeouts, connection errors) raise :class:`~assay.models.TransientJudgeError`
    with the ``Retry-After`` delay, for :class:`~assay.models.ResilientJudge` to retry.

    Args:
        settings: ``model``, ``api_key``, ``base_url`` (None: api.anthropic.com),
            ``max_tokens``, ``timeout_s``.
        http_client: an ``httpx2.Client`` for the SDK (tests pass one with a mock transport).
        max_retries: the SDK's own retries (default 0: retries belong to ResilientJudge).

    Raises:
        MissingDependency: the ``anthropic`` package is not installed.
        ConfigError: no API key.
    """

    def __init__(self, settings: JudgeSettings, http_client: Any = None, max_retries: int = 0) -> None:
        try:
            import anthropic
        except ImportError as exc:
            raise MissingDependency("anthropic", _INSTALL_HINT) from exc
        if not settings.api_key:
            raise ConfigError("judge.api_key is not set (ASSAY_JUDGE__API_KEY)", "judge settings")
        self.settings = settings
        self.model_name = settings.model
        self._sdk = anthropic
        self._client = anthropic.Anthropic(api_key=settings.api_key, base_url=settings.base_url,
                                           timeout=settings.timeout_s, max_retries=max_retries,
                                           http_client=http_client)

    @property
    def endpoint(self) -> str:
        """The URL called (``base_url``, or the SDK's default ``https://api.anthropic.com``)."""
        return str(self._client.base_url).rstrip("/")

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Everything besides model name and prompt that shapes the reply (part of cache keys)."""
        return {"provider": "anthropic", "base_url": self.settings.base_url, "max_tokens": self.settings.max_tokens}

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        """Send one Messages API request (see :class:`assay.models.JudgeClient`).

        Raises:
            TransientJudgeError: a failure worth retrying.
            JudgeError: any other API error, or a reply without text.
        """
        system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
        chat = [{"role": m["role"], "content": m["content"]} for m in messages if m["role"] != "system"]
        kwargs: dict[str, Any] = {"system": system} if system else {}
        start = time.perf_counter()
        try:
            response = self._client.messages.create(
                model=self.model_name, messages=chat,  # type: ignore[arg-type]
                max_tokens=self.settings.max_tokens, **kwargs)
        except self._sdk.APITimeoutError as exc:
            raise TransientJudgeError(f"{self._target}: call timed out after {self.settings.timeout_s} s",
                                      self.model_name) from exc
        except self._sdk.APIConnectionError as exc:
            raise TransientJudgeError(f"{self._target}: connection failed: {exc}", self.model_name) from exc
        except self._sdk.APIStatusError as exc:
            message = f"{self._target}: call failed: {type(exc).__name__}: {exc}"
            if exc.status_code in _TRANSIENT_STATUS or exc.status_code >= 500:
                retry_after = parse_retry_after(exc.response.headers.get("retry-after"))
                raise TransientJudgeError(message, self.model_name, exc.status_code, retry_after) from exc
            raise status_error(message, self.model_name, self.endpoint, exc.status_code) from exc
        latency = time.perf_counter() - start
        return self._reply(response, latency)

    @property
    def _target(self) -> str:
        return judge_target(self.model_name, self.endpoint)

    def _reply(self, response: Any, latency: float) -> JudgeReply:
        """The :class:`JudgeReply` of a Messages API response.

        Raises:
            JudgeError: no text in it.
        """
        text = "".join(getattr(block, "text", "") for block in response.content if block.type == "text")
        if not text:
            raise JudgeError("judge returned no text", self.model_name)
        return JudgeReply(text=text, model=response.model or self.model_name,
                          input_tokens=response.usage.input_tokens, output_tokens=response.usage.output_tokens,
                          latency_s=latency)
