"""Build the judge client the settings ask for."""

from __future__ import annotations

from assay._store.store import Store
from assay.models.base import JudgeClient
from assay.models.cache import CachedJudge
from assay.models.local import LocalLlamaJudge
from assay.models.openai_compat import OpenAICompatibleJudge
from assay.settings import JudgeSettings


def make_judge(settings: JudgeSettings, store: Store | None = None) -> JudgeClient:
    """Return the judge for ``settings.provider``, wrapped in a :class:`CachedJudge` when a store is given.

    ``"local"`` gives a :class:`LocalLlamaJudge` (the model loads on first use);
    ``"openai"`` an :class:`OpenAICompatibleJudge`.

    Raises:
        MissingDependency: the provider's SDK is not installed (``openai`` at once;
            ``llama_cpp`` on the first call of a local judge).
        ConfigError: an OpenAI judge without API key or base URL.
    """
    inner: JudgeClient = (OpenAICompatibleJudge(settings) if settings.provider == "openai"
                          else LocalLlamaJudge(settings, n_threads=settings.n_threads))
    return CachedJudge(inner, store) if store is not None else inner
