"""Media in messages (images, audio, video, files) as typed parts with their reference, never as text.

Every shape a source sends media in becomes one :class:`MediaPart`: OTel GenAI parts (``blob`` with
base64 ``content``, ``file`` with ``file_id``, ``uri``), OpenAI chat parts (``image_url``,
``input_image``, ``input_audio``, ``file`` / ``input_file`` with ``file_id`` or ``file_data``),
Anthropic blocks (``image`` / ``document`` with a ``base64``, ``url`` or ``file`` source), Gemini parts
(``inline_data``, ``file_data``), OpenInference flattened content (``message_content.image.image.url``,
``message_content.audio.audio.url``), ``data:`` URLs inside text, and Langfuse media tokens
(``@@@langfuseMedia:type=image/jpeg|id=...|source=base64_data_uri@@@``, the reference Langfuse leaves
where it took the bytes out).

A part's ``reference`` is what a reader or a judge is told: the URL, the file id, the provider's id, or
``inline base64, N bytes, sha256 <12 hex>…``. Inline bytes travel in ``data`` (never serialised: the
store keeps them once, by SHA-256, and the review page serves them from there); the message text keeps
none of them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MediaKind = Literal["image", "audio", "video", "file"]
_DATA_URL = re.compile(r"data:(?P<mime>[\w.+-]+/[\w.+-]+)?(?:;[\w=.+-]+)*;base64,(?P<data>[A-Za-z0-9+/=_-]+)")
_LANGFUSE = re.compile(r"@@@langfuseMedia:(?P<fields>[^@]*)@@@")
_KINDS: dict[str, MediaKind] = {"image": "image", "audio": "audio", "video": "video"}
_AUDIO_FORMATS = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}


class MediaPart(BaseModel):
    """One image, audio, video or file of a message.

    Exactly one way it is referenced is set: ``url`` (a remote URL, never a ``data:`` one), ``file_id``
    (a provider's uploaded file), ``provider_id`` (e.g. a Langfuse media id), or inline bytes
    (``sha256`` and ``size_bytes``; the bytes themselves in ``data``, never serialised).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: MediaKind
    mime_type: str | None = None
    reference: str = Field(description="what readers and judges are told: URL, file id, provider id, or "
                                       "'inline base64, N bytes, sha256 …'")
    url: str | None = None
    file_id: str | None = None
    provider_id: str | None = None
    name: str | None = Field(default=None, description="a file name the source gave")
    sha256: str | None = Field(default=None, description="SHA-256 (hex) of inline bytes")
    size_bytes: int | None = Field(default=None, description="size of inline bytes")
    data: bytes | None = Field(default=None, exclude=True, repr=False,
                               description="the inline bytes while in memory (stored apart, by sha256)")

    @property
    def marker(self) -> str:
        """``[image: file-123]``: how the part appears in text a judge reads."""
        return f"[{self.kind}: {self.reference}]"


def media_kind(mime_type: str | None, hint: str | None = None) -> MediaKind:
    """``image`` / ``audio`` / ``video`` from a modality hint or the mime type's top level, else ``file``."""
    for value in (hint, (mime_type or "").split("/")[0]):
        if value and value.lower() in _KINDS:
            return _KINDS[value.lower()]
    return "file"


def inline_part(payload: str | bytes, mime_type: str | None = None, hint: str | None = None,
                name: str | None = None) -> MediaPart:
    """A part for inline bytes (``payload``: base64 text or raw bytes)."""
    if isinstance(payload, bytes):
        data = payload
    else:
        try:
            data = base64.b64decode(payload + "=" * (-len(payload) % 4), altchars=b"-_" if "-" in payload
                                    or "_" in payload else None)
        except (binascii.Error, ValueError):
            return MediaPart(kind=media_kind(mime_type, hint), mime_type=mime_type, name=name,
                             reference=f"inline base64 that does not decode, {len(payload):,} characters")
    digest = hashlib.sha256(data).hexdigest()
    return MediaPart(kind=media_kind(mime_type, hint), mime_type=mime_type, name=name, sha256=digest,
                     size_bytes=len(data), data=data,
                     reference=f"inline base64, {len(data):,} bytes, sha256 {digest[:12]}…")


def url_part(url: str, mime_type: str | None = None, hint: str | None = None, name: str | None = None) -> MediaPart:
    """A part for a URL: a ``data:`` URL is inline bytes, a Langfuse media token its reference, else a remote URL."""
    url = url.strip()
    data_url = _DATA_URL.fullmatch(url)
    if data_url:
        return inline_part(data_url.group("data"), data_url.group("mime") or mime_type, hint, name)
    token = _LANGFUSE.fullmatch(url)
    if token:
        return langfuse_part(token.group("fields"), hint)
    return MediaPart(kind=media_kind(mime_type, hint), mime_type=mime_type, url=url, name=name, reference=url)


def file_part(file_id: str, mime_type: str | None = None, hint: str | None = None,
              name: str | None = None) -> MediaPart:
    """A part for a file uploaded to a provider (OpenAI ``file-...``, an OTel GenAI ``file`` part)."""
    return MediaPart(kind=media_kind(mime_type, hint), mime_type=mime_type, file_id=file_id, name=name,
                     reference=file_id)


def langfuse_part(fields: str, hint: str | None = None) -> MediaPart:
    """A part for a Langfuse media token's fields (``type=image/jpeg|id=...|source=...``)."""
    pairs = dict(p.split("=", 1) for p in fields.split("|") if "=" in p)
    media_id, mime = pairs.get("id", ""), pairs.get("type")
    return MediaPart(kind=media_kind(mime, hint), mime_type=mime, provider_id=media_id,
                     reference=f"langfuse media {media_id}" + (f" ({pairs['source']})" if pairs.get("source") else ""))


def extract_media(text: str) -> tuple[str, list[MediaPart]]:
    """Take Langfuse media tokens and ``data:`` URLs out of ``text``: ``(text without them, their parts)``.

    Each is replaced by nothing (the parts carry the reference); text without either comes back unchanged.
    """
    if "@@@langfuseMedia:" not in text and "base64," not in text:
        return text, []
    parts: list[MediaPart] = []

    def token(m: re.Match[str]) -> str:
        parts.append(langfuse_part(m.group("fields")))
        return ""

    def data_url(m: re.Match[str]) -> str:
        parts.append(inline_part(m.group("data"), m.group("mime")))
        return ""

    out = _DATA_URL.sub(data_url, _LANGFUSE.sub(token, text))
    return (out.strip() if parts else out), parts


_BLOCK_TYPES = frozenset({"image_url", "input_image", "image", "input_audio", "audio", "file", "input_file",
                          "document", "blob", "uri", "video", "inline_data", "file_data"})


def is_media_block(block: object) -> bool:
    """True for a content block that carries media (any shape in the module docstring)."""
    return isinstance(block, Mapping) and (block.get("type") in _BLOCK_TYPES or any(
        k in block for k in ("inline_data", "inlineData", "file_data", "fileData", "image_url")))


def block_part(block: Mapping[str, Any]) -> MediaPart | None:
    """The media part of a content block, or None when it carries none (module docstring lists the shapes)."""
    kind = block.get("type")
    inline = block.get("inline_data") or block.get("inlineData")
    if isinstance(inline, Mapping):
        return inline_part(str(inline.get("data", "")), _str(inline.get("mime_type") or inline.get("mimeType")))
    remote = block.get("file_data") or block.get("fileData")
    if isinstance(remote, Mapping):
        mime = _str(remote.get("mime_type") or remote.get("mimeType"))
        return url_part(str(remote.get("file_uri") or remote.get("fileUri") or ""), mime)
    if kind in ("blob", "uri", "file") and ("content" in block or "uri" in block or "file_id" in block):
        return _genai_part(block)
    if kind in ("image_url", "input_image") or "image_url" in block:
        return _openai_image(block)
    audio = block.get("input_audio") or block.get("audio")
    if kind in ("input_audio", "audio") and isinstance(audio, Mapping):
        fmt = str(audio.get("format", ""))
        mime = _AUDIO_FORMATS.get(fmt, f"audio/{fmt}" if fmt else None)
        return inline_part(str(audio.get("data", "")), mime, "audio")
    if kind in ("file", "input_file"):
        file = block.get("file")
        return _openai_file(file if isinstance(file, Mapping) else block)
    if kind in ("image", "document", "audio", "video") and isinstance(block.get("source"), Mapping):
        return _anthropic_source(block["source"], str(kind))
    return None


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def _genai_part(block: Mapping[str, Any]) -> MediaPart:
    mime, hint = _str(block.get("mime_type")), _str(block.get("modality"))
    if block.get("type") == "blob":
        return inline_part(str(block.get("content", "")), mime, hint)
    if block.get("type") == "file":
        return file_part(str(block.get("file_id", "")), mime, hint)
    return url_part(str(block.get("uri", "")), mime, hint)


def _openai_image(block: Mapping[str, Any]) -> MediaPart:
    image = block.get("image_url")
    url = image.get("url") if isinstance(image, Mapping) else image
    if url:
        return url_part(str(url), hint="image")
    return file_part(str(block.get("file_id", "")), hint="image")


def _openai_file(file: Mapping[str, Any]) -> MediaPart:
    name = _str(file.get("filename"))
    if file.get("file_id"):
        return file_part(str(file["file_id"]), name=name)
    if file.get("file_data"):
        data = str(file["file_data"])
        return url_part(data, name=name) if data.startswith("data:") else inline_part(data, name=name)
    return url_part(str(file.get("file_url") or file.get("url") or ""), name=name)


def _anthropic_source(source: Mapping[str, Any], kind: str) -> MediaPart:
    mime, hint = _str(source.get("media_type")), kind if kind != "document" else None
    if source.get("type") == "base64":
        return inline_part(str(source.get("data", "")), mime, hint)
    if source.get("type") == "file" or source.get("file_id"):
        return file_part(str(source.get("file_id", "")), mime, hint)
    if source.get("type") == "text":
        return MediaPart(kind="file", mime_type=mime or "text/plain", reference="inline text document")
    return url_part(str(source.get("url", "")), mime, hint)


def span_media(spans: Iterable[Any]) -> list[MediaPart]:
    """The media parts with inline bytes of spans' messages, tool results and values (what the store keeps)."""
    out: list[MediaPart] = []
    for span in spans:
        for m in (*span.input_messages, *span.output_messages):
            out += [p for p in m.media if p.data is not None]
        for text in (span.tool_result, span.input_value, span.output_value):
            if text:
                out += [p for p in extract_media(text)[1] if p.data is not None]
    return out
