"""Accessibility of the annotation app that can be checked without a browser: colour contrast of the
stylesheet (WCAG 2.1 relative luminance and contrast ratio), every keyboard shortcut on the help overlay,
the skip link and the live region on every page."""

from __future__ import annotations

import re
from itertools import product

import pytest

from assay._web.pages import HERE, make_env

CSS = (HERE / "static" / "app.css").read_text()
JS = (HERE / "static" / "app.js").read_text()
AA = 4.5
"""WCAG 2.1 success criterion 1.4.3 (AA): contrast of normal text at least 4.5:1."""


def luminance(colour: str) -> float:
    """Relative luminance of an sRGB colour ``#rgb`` or ``#rrggbb`` (WCAG 2.1, "relative luminance")."""
    h = colour.lstrip("#")
    h = "".join(c * 2 for c in h) if len(h) == 3 else h
    channels = [int(h[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    """WCAG 2.1 contrast ratio ``(L1 + 0.05) / (L2 + 0.05)``, L1 the lighter."""
    high, low = sorted((luminance(a), luminance(b)), reverse=True)
    return (high + 0.05) / (low + 0.05)


def rules(css: str) -> list[tuple[str, dict[str, str]]]:
    """``(selector, {property: value})`` of every rule (media queries flattened)."""
    css = re.sub(r"/\*.*?\*/", "", css, flags=re.S)
    out = []
    for selector, body in re.findall(r"([^{}]+)\{([^{}]*)\}", css):
        props = dict(p.split(":", 1) for p in body.split(";") if ":" in p)
        out.append((selector.strip(), {k.strip(): v.strip() for k, v in props.items()}))
    return out


def _hex(value: str) -> str | None:
    match = re.search(r"#[0-9a-fA-F]{6}\b|#[0-9a-fA-F]{3}\b", value)
    return match.group(0) if match else None


def test_the_formula_matches_wcag_reference_values() -> None:
    assert contrast("#000", "#fff") == pytest.approx(21.0)
    assert contrast("#777", "#fff") == pytest.approx(4.48, abs=0.01)  # the grey that fails AA on white
    assert contrast("#767676", "#fff") == pytest.approx(4.54, abs=0.01)  # the lightest grey that passes


def test_every_text_colour_reads_on_every_background_it_can_sit_on() -> None:
    parsed = rules(CSS)
    page = _hex(dict(parsed)["body"]["background"])
    assert page is not None
    backgrounds = {page, "#ffffff"} | {c for _, props in parsed for k, v in props.items()
                                       if k in ("background", "background-color") and (c := _hex(v))}
    light_bgs = {b for b in backgrounds if luminance(b) > 0.4}
    dark_bgs = backgrounds - light_bgs
    texts = {c for _, props in parsed if (c := _hex(props.get("color", "")))}
    failing = [(fg, bg, round(contrast(fg, bg), 2)) for fg, bg in product(texts, light_bgs | dark_bgs)
               if (luminance(fg) > 0.4) != (luminance(bg) > 0.4) and contrast(fg, bg) < AA]
    assert failing == []
    # a rule that sets both pairs them (badges, the button, the header)
    for selector, props in parsed:
        fg, bg = _hex(props.get("color", "")), _hex(props.get("background", props.get("background-color", "")))
        if fg and bg:
            assert contrast(fg, bg) >= AA, selector
    assert "opacity" not in CSS  # faded text would undo the ratios above


def test_every_shortcut_app_js_handles_is_on_the_help_overlay() -> None:
    html = make_env().get_template("base.html").render(csrf_token="", user=None)
    help_box = html.split('<dialog id="help"')[1].split("</dialog>")[0]
    listed = set(re.findall(r"<kbd>([^<]+)</kbd>", help_box))
    handled = set(re.findall(r'ev\.key === "([^"]+)"', JS)) - {"Escape"} | {"Esc"}
    assert handled <= listed, handled - listed
    scale_keys = set()
    for name in ("_scale_choices.html", "review.html"):
        scale_keys |= set(re.findall(r'data-key="([^"{]+)"', (HERE / "templates" / name).read_text()))
    assert scale_keys <= listed | {"p", "f", "1", "2", "3"}
    assert {"p", "f", "1", "2", "3", "4", "9", "Shift", "Enter"} <= listed


def test_every_page_has_a_skip_link_a_live_region_and_a_main_landmark() -> None:
    html = make_env().get_template("base.html").render(csrf_token="", user=None)
    assert html.index('class="skip-link" href="#main"') < html.index("<header")
    assert '<main id="main" tabindex="-1">' in html
    assert re.search(r'id="announce"[^>]*role="status"[^>]*aria-live="polite"', html)
