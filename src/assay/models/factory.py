"""Build the judge client the settings ask for."""

from __future__ import annotations

from assay._store.store import Store
from assay.models.anthropic_judge import AnthropicJudge
from assay.models.base import JudgeClient
from assay.models.cache import CachedJudge
from assay.models.local import LocalLlamaJudge
from assay.models.openai_compat import OpenAICompatibleJudge
from assay.models.runtime import ResilientJudge
from assay.settings import JudgeSettings


def make_judge(settings: JudgeSettings, store: Store | None = None) -> JudgeClient:
    """Return the judge for ``settings.provider``, wrapped in a :class:`CachedJudge` when a store is given.

    ``"local"`` gives a :class:`LocalLlamaJudge` (the model loads on first use);
    ``"openai"`` an :class:`OpenAICompatibleJudge` and ``"anthropic"`` an :class:`AnthropicJudge`,
    each inside a :class:`ResilientJudge` (retries with backoff and ``Retry-After``,
    ``rpm`` / ``tpm`` limits, cost from the configured prices).
    The cache is outermost, so a re-run calls the model only for what failed before.

    Raises:
        MissingDependency: the provider's SDK is not installed (``openai``, ``anthropic`` at once;
            ``llama_cpp`` on the first call of a local judge).
        ConfigError: an OpenAI judge without API key or base URL.
    """
    inner: JudgeClient
    if settings.provider in ("openai", "anthropic"):
        api: JudgeClient = (OpenAICompatibleJudge(settings, max_retries=0) if settings.provider == "openai"
                            else AnthropicJudge(settings))
        inner = ResilientJudge(api, max_retries=settings.max_retries, rpm=settings.rpm, tpm=settings.tpm,
                               price_in_per_mtok=settings.price_in_per_mtok,
                               price_out_per_mtok=settings.price_out_per_mtok)
    else:
        inner = LocalLlamaJudge(settings, n_threads=settings.n_threads)
    return CachedJudge(inner, store) if store is not None else inner
