"""Who judged: the judge a calibration certified, compared with the judge a run would use.

An evaluator's content version covers its file (prompt, labels, a ``judge.model`` the file pins), not
the workspace's judge settings: the same file has the same version on every machine. The judge that
actually answers also depends on ``assay.toml`` and the environment (provider, model, base URL,
sampling parameters), so calibration records a :class:`JudgeIdentity` of it, and every run that scores
(gate, online worker, backfill) compares its own effective judge with it before asking
(:func:`judge_change`): a different judge was never certified.

The identity is what the judge client reports about itself (``parameters`` of
:class:`~assay.models.HasParameters`: the same fields the judge cache keys on), plus provider, model and
base URL from the settings, plus ``max_prompt_chars`` and ``max_system_chars`` (they cut the prompt). A
client that reports no parameters (an extension's provider) is described by the settings' ``temperature``,
``max_tokens`` and ``seed``. Retries, rate limits, timeouts and concurrency change no reply and are left out.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from assay.models.base import HasParameters, JudgeClient
from assay.settings import JudgeSettings

_SEPARATE = ("provider", "base_url")


class JudgeIdentity(BaseModel):
    """A judge model and everything else that shapes its replies; ``fingerprint`` names it in 12 hex chars."""

    model_config = ConfigDict(frozen=True)

    version: int = Field(default=1, description="schema version of this record")
    provider: str = Field(description="the judge provider: local, openai, anthropic, or a registered one")
    model: str = Field(description="the model name sent to the provider")
    base_url: str | None = Field(default=None, description="the endpoint (None: the provider's default)")
    parameters: dict[str, JsonValue] = Field(default_factory=dict, description="sampling and prompt parameters: "
                                             "temperature, max_tokens, seed, n_ctx, the GGUF file, max_prompt_chars, "
                                             "max_system_chars")

    @property
    def fingerprint(self) -> str:
        """First 12 hex chars of the SHA-256 of the canonical JSON of provider, model, base URL and parameters."""
        data = self.model_dump(mode="json", exclude={"version"})
        canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:12]

    def describe(self) -> str:
        """``openai gpt-4o-mini @ http://... (max_tokens 160, temperature 0.0) [fingerprint]``."""
        where = f" @ {self.base_url}" if self.base_url else ""
        params = ", ".join(f"{k} {v}" for k, v in sorted(self.parameters.items()))
        return f"{self.provider} {self.model}{where} ({params}) [{self.fingerprint}]"

    def differences(self, other: JudgeIdentity) -> list[str]:
        """``field: this -> other`` for every field that differs, parameters one by one."""
        out = [f"{f}: {getattr(self, f)!r} -> {getattr(other, f)!r}" for f in ("provider", "model", "base_url")
               if getattr(self, f) != getattr(other, f)]
        for key in sorted(set(self.parameters) | set(other.parameters)):
            a, b = self.parameters.get(key), other.parameters.get(key)
            if a != b:
                out.append(f"{key}: {a!r} -> {b!r}")
        return out


def settings_parameters(settings: JudgeSettings) -> dict[str, Any]:
    """What the settings say shapes a reply, for a client that reports nothing itself (also the judge cache's key
    for such a client): provider, base URL, temperature, max_tokens and seed (when set)."""
    out: dict[str, Any] = {"provider": settings.provider, "base_url": _url(settings.base_url),
                           "temperature": settings.temperature, "max_tokens": settings.max_tokens}
    if settings.seed is not None:
        out["seed"] = settings.seed
    return out


def judge_identity(judge: JudgeClient, settings: JudgeSettings) -> JudgeIdentity:
    """The identity of ``judge`` running under ``settings`` (the evaluator's model override applied)."""
    own: Mapping[str, Any] = judge.parameters if isinstance(judge, HasParameters) else settings_parameters(settings)
    params = {k: v for k, v in own.items() if k not in _SEPARATE and not k.startswith("assay.")}
    params["max_prompt_chars"] = settings.max_prompt_chars
    params["max_system_chars"] = settings.max_system_chars
    return JudgeIdentity(provider=settings.provider, model=judge.model_name,
                         base_url=_url(own.get("base_url", settings.base_url)), parameters=params)


def judge_change(certified: JudgeIdentity | None, certified_model: str | None,
                 effective: JudgeIdentity) -> str | None:
    """How ``effective`` differs from the certified judge, in words; None when it is the same judge.

    Args:
        certified: the identity the calibration recorded (None: recorded before identities were).
        certified_model: the judge model that calibration named; compared alone when ``certified`` is None.
        effective: the judge the run would use.
    """
    if certified is None:
        if certified_model is None or certified_model == effective.model:
            return None
        return f"model: {certified_model!r} -> {effective.model!r}"
    diff = certified.differences(effective)
    return "; ".join(diff) if diff else None


def _url(url: object) -> str | None:
    return str(url).rstrip("/") if url else None
