"""Judge-model clients: OpenAI-compatible and Anthropic API judges, an offline llama.cpp judge, a cache,
and the runtime around API calls (retries, rate limits, accounting).

Every client follows :class:`JudgeClient`: ``complete(messages, json_schema) -> JudgeReply``
and a ``model_name``. Build one from settings with :func:`make_judge`; more providers come from
packages through the entry-point group ``assay.judges`` (:func:`judge_provider`).
"""

from assay.models.anthropic_judge import AnthropicJudge
from assay.models.base import ChatMessage, HasParameters, JudgeClient, JudgeReply
from assay.models.cache import CachedJudge, cache_key
from assay.models.factory import JudgeProvider, judge_provider, make_judge
from assay.models.identity import JudgeIdentity, judge_change, judge_identity
from assay.models.local import LocalLlamaJudge, default_gguf_path
from assay.models.openai_compat import OpenAICompatibleJudge
from assay.models.runtime import RateLimiter, ResilientJudge, TransientJudgeError, Usage, parse_retry_after

__all__ = [
    "AnthropicJudge", "CachedJudge", "ChatMessage", "HasParameters", "JudgeClient", "JudgeIdentity", "JudgeProvider",
    "JudgeReply",
    "LocalLlamaJudge", "OpenAICompatibleJudge", "RateLimiter", "ResilientJudge", "TransientJudgeError", "Usage",
    "cache_key", "default_gguf_path", "judge_change", "judge_identity", "judge_provider", "make_judge",
    "parse_retry_after",
]
