"""REPORT.html: the same document as REPORT.md as one self-contained page.

- figures are inlined as base64 PNG data URIs (the file can be mailed or archived alone);
- every table is sortable: click a header (numbers sort by their leading value, so
  "+4.5% [-31.3, +61.7]" sorts by +4.5); no external script or stylesheet is loaded;
- the answer's verdict tables carry `class="verdict"` and come first after the title;
- a contents list of the `##` sections sits under the title.
Markdown is rendered with markdown-it-py (a dependency of rich), tables enabled.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1180px;
  margin: 2em auto; padding: 0 1.2em; line-height: 1.5; color: #1d232a; }
h1 { font-size: 1.7em; border-bottom: 2px solid #2b6cb0; padding-bottom: .3em; }
h2 { margin-top: 2.2em; border-bottom: 1px solid #d7dde4; padding-bottom: .2em; }
h3 { margin-top: 1.6em; }
table { border-collapse: collapse; margin: 1em 0; font-size: .88em; display: block;
  overflow-x: auto; max-width: 100%; }
th, td { border: 1px solid #d7dde4; padding: .3em .65em; text-align: left; vertical-align: top; }
th { background: #eef2f6; cursor: pointer; user-select: none; white-space: nowrap; }
th.sorted-asc::after { content: " \\25B2"; font-size: .7em; }
th.sorted-desc::after { content: " \\25BC"; font-size: .7em; }
tr:nth-child(even) td { background: #fafbfc; }
table.verdict { font-size: .95em; box-shadow: 0 1px 4px rgba(0,0,0,.08); }
table.verdict th { background: #2b6cb0; color: #fff; }
img { max-width: 100%; border: 1px solid #e3e7eb; border-radius: 4px; }
p > em:only-child { color: #4a5561; }
code { background: #f2f4f7; padding: 0 .25em; border-radius: 3px; font-size: .92em; }
pre { background: #f6f8fa; padding: .8em 1em; overflow-x: auto; border-radius: 4px; }
pre code { background: none; padding: 0; }
nav.toc { background: #f6f8fa; border: 1px solid #e3e7eb; border-radius: 4px;
  padding: .5em 1.2em; font-size: .9em; }
nav.toc ol { margin: .3em 0; padding-left: 1.3em; columns: 2; }
"""

SORT_SCRIPT = """
(function () {
  function key(cell) {
    var text = cell.textContent.trim();
    var m = text.replace(/,/g, "").match(/^[+-]?\\d+(\\.\\d+)?/);
    return m ? [0, parseFloat(m[0])] : [1, text.toLowerCase()];
  }
  function compare(a, b) {
    if (a[0] !== b[0]) return a[0] - b[0];
    return a[1] < b[1] ? -1 : a[1] > b[1] ? 1 : 0;
  }
  document.querySelectorAll("table").forEach(function (table) {
    var heads = table.querySelectorAll("thead th");
    heads.forEach(function (th, column) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var ascending = !th.classList.contains("sorted-asc");
        heads.forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
        th.classList.add(ascending ? "sorted-asc" : "sorted-desc");
        var rows = Array.prototype.slice.call(body.rows);
        rows.sort(function (r1, r2) {
          var c = compare(key(r1.cells[column]), key(r2.cells[column]));
          return ascending ? c : -c;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  });
  document.body.setAttribute("data-report-ready", "1");
})();
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


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", html.unescape(text).lower()).strip("-")


def _anchor_sections(body: str) -> tuple[str, list[tuple[str, str]]]:
    """Give every <h2> an id; return the body and the (id, title) contents list."""
    toc: list[tuple[str, str]] = []

    def replace(match: re.Match) -> str:
        title = match.group(1)
        anchor = _slug(re.sub(r"<[^>]+>", "", title))
        toc.append((anchor, title))
        return f'<h2 id="{anchor}">{title}</h2>'

    return re.sub(r"<h2>(.*?)</h2>", replace, body), toc


def _mark_verdict_tables(body: str) -> str:
    """Tables of the Answer section (their header has a 'Throughput verdict' column)."""
    return re.sub(
        r"<table>(\s*<thead>\s*<tr>\s*<th>Scenario</th>(?:(?!</thead>).)*?Throughput verdict)",
        r'<table class="verdict">\1',
        body,
        flags=re.DOTALL,
    )


def _with_toc(body: str, toc: list[tuple[str, str]]) -> str:
    items = "".join(f'<li><a href="#{a}">{t}</a></li>' for a, t in toc)
    nav = f'<nav class="toc"><strong>Contents</strong><ol>{items}</ol></nav>'
    end_of_title = body.find("</h1>")
    if end_of_title < 0:
        return nav + body
    cut = end_of_title + len("</h1>")
    return body[:cut] + "\n" + nav + body[cut:]


def render_html(markdown_text: str, report_dir: Path, title: str) -> str:
    body = _inline_images(_render_markdown(markdown_text), report_dir)
    body, toc = _anchor_sections(_mark_verdict_tables(body))
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
        f"{_with_toc(body, toc)}\n<script>{SORT_SCRIPT}</script>\n</body></html>\n"
    )


def write_html(markdown_text: str, report_dir: Path, title: str) -> Path:
    path = report_dir / "REPORT.html"
    path.write_text(render_html(markdown_text, report_dir, title))
    return path
