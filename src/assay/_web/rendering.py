"""Trace content as the review page shows it: assistant markdown rendered safely, tool results and
arguments as folded JSON, and lists of records as tables.

Everything here returns :class:`markupsafe.Markup` built from escaped text only:

- **Markdown** (:func:`markdown_html`) is rendered by markdown-it-py (CommonMark plus tables and
  strikethrough, the ``js-default`` preset) with raw HTML *off* (a ``<script>`` in a trace is shown
  as text), images off (a trace cannot make the browser fetch anything), links kept only for the
  schemes markdown-it allows (no ``javascript:``, ``vbscript:``, ``file:``, ``data:``) and opened
  with ``rel="noopener noreferrer nofollow"``, and every ``style`` attribute dropped (table
  alignment), so the app's Content-Security-Policy (``style-src 'self'``) is never violated.
- **JSON** (:func:`json_html`): a tool result or argument object that parses as JSON is shown folded
  by key (nested objects and arrays in ``<details>``, open at the top level), long strings collapsed
  after :data:`SHORT_CHARS` characters, and a list of objects as a table (columns: the keys in the
  order first seen). Anything else stays preformatted text.
"""

from __future__ import annotations

import html
import json
from functools import cache
from typing import Any, TypeGuard

from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

SHORT_CHARS = 300
"""Strings longer than this are collapsed (their first :data:`PREVIEW_CHARS` characters show)."""
PREVIEW_CHARS = 120
MAX_DEPTH = 6
"""Nesting deeper than this is shown as indented JSON text."""
MAX_ROWS = 200
"""Rows of a record table shown at once; the rest fold under a summary."""
MAX_ITEMS = 1000
"""Rows or array items rendered at all; beyond them a note says how many are left out (the API has them all)."""
OPEN_CHILDREN = 12
"""Nested objects with at most this many keys (arrays: items) start open."""
_LINK_REL = "noopener noreferrer nofollow"


@cache
def _markdown() -> MarkdownIt:
    """The one markdown renderer (raw HTML off, images off; see the module docstring)."""
    return MarkdownIt("js-default", {"html": False, "linkify": False, "typographer": False}).disable("image")


def _clean(tokens: list[Token]) -> None:
    """Drop ``style`` attributes (CSP) and mark links ``rel=noopener noreferrer nofollow``, in place."""
    for token in tokens:
        if token.attrs:
            token.attrs.pop("style", None)
        if token.type == "link_open":
            token.attrs["rel"] = _LINK_REL
        if token.children:
            _clean(token.children)


def markdown_html(text: str) -> Markup:
    """``text`` (markdown) as safe HTML: raw HTML in it is escaped, never passed through."""
    md = _markdown()
    env: dict[str, Any] = {}
    tokens = md.parse(text, env)
    _clean(tokens)
    return Markup(md.renderer.render(tokens, md.options, env))


def parse_json(text: str) -> Any | None:
    """The JSON value of ``text`` when it is a JSON object or array, else None (not JSON, or a scalar)."""
    stripped = text.strip()
    if not stripped or stripped[0] not in "{[":
        return None
    try:
        value = json.loads(stripped)
    except ValueError:
        return None
    return value if isinstance(value, dict | list) else None


def json_html(value: Any) -> Markup:
    """A JSON object or array as folded HTML (see the module docstring)."""
    out: list[str] = ['<div class="json">']
    _value(value, 0, out)
    out.append("</div>")
    return Markup("".join(out))


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _is_records(value: Any) -> TypeGuard[list[dict[str, Any]]]:
    """A non-empty list of objects: shown as a table."""
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def _scalar(value: Any, out: list[str]) -> None:
    if isinstance(value, str):
        if len(value) <= SHORT_CHARS:
            out += ['<span class="j-str">', _esc(value), "</span>"]
        else:
            out += ['<details class="fold long"><summary>', _esc(value[:PREVIEW_CHARS]),
                    f' … <span class="muted">({len(value):,} characters)</span></summary><div class="j-str">',
                    _esc(value), "</div></details>"]
    elif value is None or isinstance(value, bool):
        out.append(f'<span class="j-lit">{json.dumps(value)}</span>')
    else:
        out += ['<span class="j-num">', _esc(str(value)), "</span>"]


def _value(value: Any, depth: int, out: list[str]) -> None:
    if not isinstance(value, dict | list):
        _scalar(value, out)
    elif depth >= MAX_DEPTH:
        out += ["<pre>", _esc(json.dumps(value, indent=2, ensure_ascii=False, default=str)), "</pre>"]
    elif _is_records(value):
        _table(value, depth, out)
    elif isinstance(value, dict):
        _object(value, depth, out)
    else:
        _array(value, depth, out)


def _folded(label: str, value: dict[str, Any] | list[Any], depth: int, out: list[str]) -> None:
    """A nested object or array under a summary naming its size (``label``: escaped HTML); small ones start open."""
    size = len(value)
    noun = "key" if isinstance(value, dict) else "row" if _is_records(value) else "item"
    opened = " open" if size <= OPEN_CHILDREN else ""
    out += [f'<details class="fold"{opened}><summary>', label,
            f' <span class="muted">{size} {noun}{"s" if size != 1 else ""}</span></summary>']
    _value(value, depth + 1, out)
    out.append("</details>")


def _object(value: dict[str, Any], depth: int, out: list[str]) -> None:
    if not value:
        out.append('<span class="j-lit">{}</span>')
        return
    out.append('<dl class="j-obj">')
    for key, child in value.items():
        name = f'<span class="j-key">{_esc(str(key))}</span>'
        if isinstance(child, dict | list) and child:
            out.append('<div class="j-nested">')
            _folded(name, child, depth, out)
            out.append("</div>")
        else:
            out += ["<dt>", name, "</dt><dd>"]
            _value(child, depth + 1, out)
            out.append("</dd>")
    out.append("</dl>")


def _array(value: list[Any], depth: int, out: list[str]) -> None:
    if not value:
        out.append('<span class="j-lit">[]</span>')
        return
    out.append('<ol class="j-arr" start="0">')
    for i, child in enumerate(value[:MAX_ITEMS]):
        out.append("<li>")
        if isinstance(child, dict | list) and child:
            _folded(f"[{i}]", child, depth, out)
        else:
            _value(child, depth + 1, out)
        out.append("</li>")
    out.append("</ol>")
    _left_out(len(value), out)


def _left_out(n: int, out: list[str]) -> None:
    if n > MAX_ITEMS:
        out.append(f'<p class="muted">{n - MAX_ITEMS:,} more not shown (the API\'s unit has them all)</p>')


INLINE_CHARS = 80
"""A table cell holding a small object or array of plain values (under this many characters) shows it on one line."""


def _inline(value: dict[str, Any] | list[Any], out: list[str]) -> bool:
    """A small object or array of plain values on one line (``key value · key value``); False when it is not one."""
    pairs = list(value.items()) if isinstance(value, dict) else [(None, v) for v in value]
    if any(isinstance(v, dict | list) for _, v in pairs):
        return False
    text = [(k, v if isinstance(v, str) else json.dumps(v)) for k, v in pairs]
    if sum(len(str(k or "")) + len(v) + 3 for k, v in text) > INLINE_CHARS:
        return False
    out.append(" · ".join((f'<span class="j-key">{_esc(str(k))}</span> ' if k is not None else "") + _esc(v)
                          for k, v in text))
    return True


def _cell(value: Any, depth: int, out: list[str]) -> None:
    if isinstance(value, dict | list) and value:
        if not _inline(value, out):
            _folded("…", value, depth, out)
    else:
        _value(value, depth + 1, out)


def _rows(rows: list[dict[str, Any]], columns: list[str], depth: int, out: list[str]) -> None:
    for row in rows:
        out.append("<tr>")
        for c in columns:
            out.append("<td>")
            if c in row:
                _cell(row[c], depth, out)
            out.append("</td>")
        out.append("</tr>")


def _table(rows: list[dict[str, Any]], depth: int, out: list[str]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    out.append('<div class="j-scroll"><table class="grid j-table"><thead><tr>')
    out += [f"<th>{_esc(str(c))}</th>" for c in columns]
    out.append("</tr></thead><tbody>")
    _rows(rows[:MAX_ROWS], columns, depth, out)
    out.append("</tbody></table></div>")
    if len(rows) > MAX_ROWS:
        out.append(f'<details class="fold"><summary>{min(len(rows), MAX_ITEMS) - MAX_ROWS:,} more rows</summary>'
                   '<div class="j-scroll"><table class="grid j-table"><tbody>')
        _rows(rows[MAX_ROWS:MAX_ITEMS], columns, depth, out)
        out.append("</tbody></table></div></details>")
    _left_out(len(rows), out)
