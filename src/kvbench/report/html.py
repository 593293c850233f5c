"""Single-file HTML version of REPORT.md: figures inlined as base64 PNG data URIs.

Markdown is rendered with markdown-it-py (already installed as a dependency of rich), tables enabled.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }
th { background: #f3f3f3; }
img { max-width: 100%; }
code { background: #f6f6f6; padding: 0 0.2em; }
"""


def _render_markdown(text: str) -> str:
    try:
        from markdown_it import MarkdownIt
    except ImportError:  # keep the report usable without the renderer
        return f"<pre>{html.escape(text)}</pre>"
    return MarkdownIt("commonmark").enable("table").render(text)


def _inline_images(body: str, report_dir: Path) -> str:
    def replace(match: re.Match) -> str:
        src = match.group(1)
        path = report_dir / src
        if not path.is_file() or not src.endswith(".png"):
            return match.group(0)
        data = base64.b64encode(path.read_bytes()).decode("ascii")
        return f'src="data:image/png;base64,{data}"'

    return re.sub(r'src="([^"]+)"', replace, body)


def write_html(markdown_text: str, report_dir: Path, title: str) -> Path:
    body = _inline_images(_render_markdown(markdown_text), report_dir)
    page = (
        f'<!doctype html>\n<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n"
    )
    path = report_dir / "REPORT.html"
    path.write_text(page)
    return path
