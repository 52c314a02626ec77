"""Build the judge client the settings ask for, from the judge providers registered by name.

A provider is a function ``(settings: JudgeSettings) -> JudgeClient`` registered with
:func:`judge_provider`; ``[judge] provider`` in ``assay.toml`` names it. The built-ins
(``local``, ``openai``, ``anthropic``, in :mod:`assay.models.providers`) register exactly so;
a package adds one through the entry-point group ``assay.judges``::

    [project.entry-points."assay.judges"]
    vertex = "my_package.judges:vertex_judge"
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeGuard, TypeVar

from assay._store.store import Store
from assay._util.registry import Registry
from assay.models.base import JudgeClient
from assay.models.cache import CachedJudge
from assay.models.identity import settings_parameters
from assay.settings import JudgeSettings

JudgeProvider = Callable[[JudgeSettings], JudgeClient]
"""Builds a judge client from the judge settings; raises ``MissingDependency`` (with the install hint)
when its SDK is missing and ``ConfigError`` when the settings are incomplete."""

P = TypeVar("P", bound=JudgeProvider)


def _is_provider(obj: object) -> TypeGuard[JudgeProvider]:
    return callable(obj)


JUDGE_PROVIDERS: Registry[JudgeProvider] = Registry("assay.judges", "judge provider", _is_provider,
                                                     builtins="assay.models.providers")
"""The judge providers: name (``[judge] provider``) -> function building the client."""


def judge_provider(name: str) -> Callable[[P], P]:
    """Decorator registering a judge provider under ``name`` (the built-ins use it too).

    Raises:
        ConfigError: see :meth:`assay._util.registry.Registry.register`.
    """
    def add(provider: P) -> P:
        JUDGE_PROVIDERS.register(name)(provider)
        return provider

    return add


def make_judge(settings: JudgeSettings, store: Store | None = None, refresh: bool = False) -> JudgeClient:
    """Return the judge of ``settings.provider``, wrapped in a :class:`CachedJudge` when a store is given
    (``refresh``: the cache asks the model anyway and replaces what it held).

    ``"local"`` gives a :class:`LocalLlamaJudge` (the model loads on first use);
    ``"openai"`` an :class:`OpenAICompatibleJudge` and ``"anthropic"`` an :class:`AnthropicJudge`,
    each inside a :class:`ResilientJudge` (retries with backoff and ``Retry-After``,
    ``rpm`` / ``tpm`` limits, cost from the configured prices); other names are providers
    registered by packages (entry-point group ``assay.judges``).
    The cache is outermost, so a re-run calls the model only for what failed before.

    Raises:
        ConfigError: an unknown provider (the message lists the known ones); an OpenAI judge
            without API key or base URL.
        MissingDependency: the provider's SDK is not installed (``openai``, ``anthropic`` at once;
            ``llama_cpp`` on the first call of a local judge).
    """
    inner = JUDGE_PROVIDERS.get(settings.provider)(settings)
    if store is None:
        return inner
    return CachedJudge(inner, store, defaults=settings_parameters(settings), refresh=refresh)
