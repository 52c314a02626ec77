"""The judge-client contract: what every judge model (API, local, cached) looks like."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

ChatMessage = dict[str, str]
"""One chat message: ``{"role": "system" | "user" | "assistant", "content": text}``."""


class JudgeReply(BaseModel):
    """What one judge call returned.

    Attributes:
        text: the reply text as generated (not parsed; see ``assay.evaluators.verdict``).
        model: the model that produced it.
        input_tokens: prompt tokens, None when the provider did not say.
        output_tokens: generated tokens, None when the provider did not say.
        latency_s: wall time of the model call in seconds (the original call's time when cached).
        cached: True when the reply came from the judge cache and no model was called.
        attempts: calls made for this reply (1 = first try; more = retried).
        cost_usd: price of the call in US dollars, None when no prices are configured.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    model: str
    input_tokens: int | None = None
    output_tokens: int | None = None
    latency_s: float = Field(default=0.0, ge=0)
    cached: bool = False
    attempts: int = Field(default=1, ge=1)
    cost_usd: float | None = Field(default=None, ge=0)


@runtime_checkable
class JudgeClient(Protocol):
    """A judge model: chat messages in, one reply out.

    Implementations raise :class:`assay.exceptions.JudgeError` for a failed call
    (transport error, timeout, provider refusal), never return an empty success.
    """

    model_name: str

    def complete(self, messages: list[ChatMessage], json_schema: dict[str, Any] | None = None) -> JudgeReply:
        """Send ``messages``; when ``json_schema`` is given, constrain the reply to JSON matching it.

        Raises:
            JudgeError: the call failed.
        """
        ...


@runtime_checkable
class HasParameters(Protocol):
    """A judge that reports the generation parameters that shape its replies (for cache keys)."""

    @property
    def parameters(self) -> Mapping[str, Any]:
        """Generation parameters, e.g. ``{"temperature": 0.0, "max_tokens": 160}``."""
        ...
