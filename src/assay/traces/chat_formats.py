"""Chat messages in the shapes frameworks log them, normalized to :class:`Message`.

Shapes understood by :func:`chat_messages`:

* OpenAI chat completions: ``{role, content, tool_calls: [{id, type, function: {name, arguments}}],
  tool_call_id}`` (``developer`` → system);
* Anthropic messages: ``content`` as blocks ``text`` / ``tool_use {id, name, input}`` /
  ``tool_result {tool_use_id, content, is_error}`` (a ``tool_result`` becomes a ``tool`` message);
* OTel GenAI parts: ``{role, parts: [{type: text|tool_call|tool_call_response, ...}]}``;
* Gemini: ``{role: user|model, parts: [{text} | {function_call} | {function_response}]}``, and a
  request's ``contents``;
* media parts in any of these (images, audio, files: :mod:`assay.traces.media`) become the message's
  ``media``, never text;
* OpenAI Responses items: ``{type: function_call, call_id, name, arguments}``,
  ``{type: function_call_output, call_id, output}``, ``{type: message, role, content}``;
* wrappers: ``{messages: [...]}``, ``{contents: ...}``, ``{prompt: text}``, a chat completion's
  ``{choices: [{message}]}`` (the first choice), a single message dict,
  a list of those, a JSON string of any of them, or plain text (one message of the default role).
"""

from __future__ import annotations

import json
from typing import Any

from assay.traces.genai_events import content_media, content_text, openai_tool_calls
from assay.traces.media import MediaPart, block_part, is_media_block
from assay.traces.model import Message, Role, ToolCall, parse_arguments

_ROLES: dict[str, Role] = {"system": "system", "developer": "system", "user": "user", "human": "user",
                           "assistant": "assistant", "model": "assistant", "ai": "assistant", "tool": "tool",
                           "function": "tool", "ipython": "tool"}
CHAT_ROLES = frozenset(_ROLES)
"""The message roles chat logs use (``system`` ... ``tool``, and synonyms such as ``developer``, ``model``)."""


def _loads(value: Any) -> Any:
    if isinstance(value, str) and value.strip()[:1] in ("{", "[", '"'):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def _call(id_: Any, name: Any, args: Any) -> ToolCall:
    parsed, raw, flag = parse_arguments(args)
    return ToolCall(id=None if id_ is None else str(id_), name=str(name or "unknown"), arguments=parsed,
                    arguments_raw=raw, arguments_flag=flag)


def _role(value: Any, default: Role) -> Role:
    return _ROLES.get(str(value).lower(), default) if value else default


def _blocks(role: Role, blocks: list[Any], name: str | None = None) -> list[Message]:
    """Anthropic / Gemini / GenAI-parts content blocks of one message (``name``: its speaker)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    results: list[Message] = []
    media: list[MediaPart] = []
    for b in blocks:
        if isinstance(b, str):
            texts.append(b)
            continue
        if not isinstance(b, dict):
            continue
        kind = b.get("type")
        if is_media_block(b) and (part := block_part(b)) is not None:
            media.append(part)
        elif kind in ("text", "reasoning", "input_text", "output_text") or (kind is None and "text" in b):
            texts.append(str(b.get("text", b.get("content", ""))))
        elif kind in ("tool_use", "tool_call") or "function_call" in b or "functionCall" in b:
            fc = b.get("function_call") or b.get("functionCall") or b
            calls.append(_call(fc.get("id"), fc.get("name"), fc.get("input", fc.get("arguments", fc.get("args")))))
        elif kind in ("tool_result", "tool_call_response") or "function_response" in b or "functionResponse" in b:
            fr = b.get("function_response") or b.get("functionResponse") or b
            out = fr.get("content", fr.get("response"))
            results.append(Message(role="tool", content=content_text(out), is_error=fr.get("is_error") is True,
                                   tool_call_id=_str(fr.get("tool_use_id") or fr.get("id")), name=_str(fr.get("name")),
                                   media=content_media(out)))
    msgs = [Message(role=role, content="\n".join(texts) if texts else None, tool_calls=tuple(calls), name=name,
                    media=tuple(media))] if texts or calls or media or not results else []
    return results + msgs if role == "user" else msgs + results


def _is_part(value: Any) -> bool:
    """A content part without a role: media (:func:`~assay.traces.media.is_media_block`) or a typed text part."""
    return isinstance(value, dict) and "role" not in value and (
        is_media_block(value) or value.get("type") in ("text", "input_text", "output_text"))


def _is_tool_definition(value: Any) -> bool:
    """A tool schema logged as a message (``{type: function, function: {name, parameters}}``)."""
    value = _loads(value)
    return isinstance(value, dict) and value.get("type") == "function" and isinstance(value.get("function"), dict) \
        and "parameters" in value["function"]


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _one(m: dict[str, Any], default: Role) -> list[Message]:
    kind = m.get("type")
    if kind == "function_call":
        return [Message(role="assistant", tool_calls=(_call(m.get("call_id") or m.get("id"), m.get("name"),
                                                            m.get("arguments")),))]
    if kind == "function_call_output":
        return [Message(role="tool", content=content_text(m.get("output")), tool_call_id=_str(m.get("call_id")))]
    if "message" in m and isinstance(m["message"], dict) and "role" not in m:
        return _one(m["message"], default)
    role = _role(m.get("role") or (m.get("type") if m.get("type") in _ROLES else None), default)
    if isinstance(m.get("content"), dict) and ("parts" in m["content"] or "role" in m["content"]):
        return chat_messages(m["content"], default)
    if _is_tool_definition(m.get("content")):
        return []
    if isinstance(m.get("parts"), list):
        return _blocks(role, m["parts"], _str(m.get("name")))
    content = m.get("content")
    if isinstance(content, list) and any(isinstance(b, dict) and (b.get("type") in (
            "tool_use", "tool_result", "text", "input_text", "output_text") or is_media_block(b)) for b in content):
        msgs = _blocks(role, content, _str(m.get("name")))
        if m.get("tool_calls"):
            more = openai_tool_calls(m["tool_calls"])
            msgs[-1] = msgs[-1].model_copy(update={"tool_calls": msgs[-1].tool_calls + more})
        return msgs
    text = content_text(content) if not isinstance(content, str) else content
    extra: dict[str, Any] = m["additional_kwargs"] if isinstance(m.get("additional_kwargs"), dict) else {}
    calls = openai_tool_calls(m.get("tool_calls") or extra.get("tool_calls"))
    if m.get("function_call"):
        fc = m["function_call"]
        calls += (_call(None, fc.get("name"), fc.get("arguments")),)
    return [Message(role=role, content=text if text != "" or not calls else None, tool_calls=calls,
                    tool_call_id=_str(m.get("tool_call_id")), name=_str(m.get("name")))]


def chat_messages(value: Any, default: Role = "user") -> list[Message]:
    """Normalize chat messages in any shape listed in the module docstring.

    Args:
        value: the logged input or output (parsed JSON or a JSON string).
        default: the role of bare text and role-less messages.

    Returns:
        messages in order; empty for None / empty input. Never raises on odd shapes.
    """
    value = _loads(value)
    if value is None or value == "" or value == [] or value == {}:
        return []
    if isinstance(value, str):
        return [Message(role=default, content=value)]
    if isinstance(value, list):
        if value and all(_is_part(item) for item in value):  # one message's content parts, no role
            return _blocks(default, value)
        return [msg for item in value for msg in chat_messages(item, default)]
    if _is_part(value):
        return _blocks(default, [value])
    if not isinstance(value, dict):
        return [Message(role=default, content=json.dumps(value, ensure_ascii=False))]
    for key in ("messages", "contents", "input", "new_message"):
        if key in value and "role" not in value and isinstance(value[key], list | str | dict):
            config: dict[str, Any] = value["config"] if isinstance(value.get("config"), dict) else {}
            instruction = value.get("system", value.get("system_instruction", config.get("system_instruction")))
            system = chat_messages(instruction, "system") if instruction else []
            return system + chat_messages(value[key], default)
    if "prompt" in value and "role" not in value:
        return chat_messages(value["prompt"], default)
    if isinstance(value.get("choices"), list) and value["choices"] and "role" not in value:
        first = value["choices"][0]
        return chat_messages(first.get("message", first.get("text")) if isinstance(first, dict) else first,
                             "assistant")
    if "role" in value or "parts" in value or "message" in value \
            or value.get("type") in (*_ROLES, "function_call", "function_call_output"):
        return _one(value, default)
    if "content" in value:
        return _one({**value, "role": default}, default)
    return [Message(role=default, content=json.dumps(value, ensure_ascii=False))]
