"""Judge-model clients: an OpenAI-compatible API judge, an offline llama.cpp judge, and a cache.

Every client follows :class:`JudgeClient`: ``complete(messages, json_schema) -> JudgeReply``
and a ``model_name``. Build one from settings with :func:`make_judge`.
"""

from assay.models.base import ChatMessage, HasParameters, JudgeClient, JudgeReply
from assay.models.cache import CachedJudge, cache_key
from assay.models.factory import make_judge
from assay.models.local import LocalLlamaJudge, default_gguf_path
from assay.models.openai_compat import OpenAICompatibleJudge

__all__ = [
    "CachedJudge", "ChatMessage", "HasParameters", "JudgeClient", "JudgeReply", "LocalLlamaJudge",
    "OpenAICompatibleJudge", "cache_key", "default_gguf_path", "make_judge",
]
