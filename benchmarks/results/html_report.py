"""report.html: results.md as one self-contained page (figures inline as base64 PNG, tables sortable by plain inline JS).

The page is made from results.md itself, so it holds exactly its tables and figures and no second
copy of their assembly: headings, paragraphs, pipe tables and `![caption](file.png)` lines are
translated; nothing is fetched when it is opened (no network, no fonts, no scripts from elsewhere).
Reference rows (label `... [ref NAME]`, stats.REFERENCE_MARK) and the true frame's ceiling row are
marked; the ceiling row stays under the others when a table is sorted.
"""

from __future__ import annotations

import base64
import html
import re
from pathlib import Path

from benchmarks.results.stats import REFERENCE_MARK

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px; padding: 0 1em; color: #222; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 12.5px; }
th, td { border: 1px solid #ccc; padding: 2px 7px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f2f2f2; cursor: pointer; user-select: none; }
th[aria-sort=ascending]::after { content: " \\25B2"; } th[aria-sort=descending]::after { content: " \\25BC"; }
tr.reference td { background: #fff7e0; color: #555; }
tr.reference td:first-child::before { content: "ref "; font-size: 10px; font-weight: bold; color: #a66f00;
  border: 1px solid #a66f00; border-radius: 3px; padding: 0 2px; margin-right: 4px; }
tr.ceiling td { font-style: italic; background: #f7f7f7; }
figure { margin: 1em 0; } figure img { max-width: 100%; image-rendering: pixelated; }
figcaption { color: #555; font-size: 12px; } code { background: #f4f4f4; padding: 0 3px; }
"""

# Click a header: sort the body rows by that column (numbers by value, "–" last; the first column by name),
# again: the other way. The ceiling row stays last.
SCRIPT = """
function cellValue(td) {
  var t = td.textContent.trim();
  var m = t.match(/^-?\\d+(\\.\\d+)?(e-?\\d+)?/i);
  return m ? parseFloat(m[0]) : null;
}
function sortTable(th) {
  var table = th.closest("table"), body = table.tBodies[0], col = th.cellIndex;
  var down = th.getAttribute("aria-sort") === "ascending";
  Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) { c.removeAttribute("aria-sort"); });
  th.setAttribute("aria-sort", down ? "descending" : "ascending");
  var rows = Array.prototype.slice.call(body.rows);
  var fixed = rows.filter(function (r) { return r.classList.contains("ceiling"); });
  rows = rows.filter(function (r) { return !r.classList.contains("ceiling"); });
  rows.sort(function (a, b) {
    var x = a.cells[col], y = b.cells[col];
    if (col === 0) { return (down ? -1 : 1) * x.textContent.localeCompare(y.textContent); }
    var u = cellValue(x), v = cellValue(y);
    if (u === null && v === null) { return 0; }
    if (u === null) { return 1; }
    if (v === null) { return -1; }
    return down ? v - u : u - v;
  });
  rows.concat(fixed).forEach(function (r) { body.appendChild(r); });
}
document.querySelectorAll("th").forEach(function (th) {
  th.addEventListener("click", function () { sortTable(th); });
});
"""

IMAGE = re.compile(r"^!\[(?P<alt>[^\]]*)\]\((?P<src>[^)]+)\)$")


def inline(text: str) -> str:
    """One line of markdown text as HTML: escaped, with `code`, **bold** and *italic*."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    return re.sub(r"(?<![\w*])\*(?!\s)(.+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", out)


def cells(line: str) -> list[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def table(lines: list[str]) -> str:
    """A markdown pipe table (header, separator, rows) as a sortable HTML table."""
    head = "".join(f'<th scope="col" title="click to sort">{inline(c)}</th>' for c in cells(lines[0]))
    body = []
    for line in lines[2:]:
        row = cells(line)
        kind = ("reference" if REFERENCE_MARK in row[0] else "ceiling" if row[0].startswith("*") else "")
        attr = f' class="{kind}"' if kind else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def figure(alt: str, src: str, folder: Path) -> str:
    """An image line as a figure with the PNG inline; a missing file becomes a note (the page never links out)."""
    path = folder / src
    if not path.is_file():
        return f"<p><em>{html.escape(src)} was not written by this run.</em></p>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(alt)} ({html.escape(src)})</figcaption></figure>")


def to_html(markdown: str, folder: Path, title: str, extra: list[tuple[str, Path]] = ()) -> str:
    """The page of a results.md whose figures lie in `folder`; `extra` (caption, PNG path) figures at the end
    (the reference runs' own in-between grids)."""
    parts: list[str] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].rstrip()
        if line.startswith("|"):
            block = []
            while i < len(lines) and lines[i].startswith("|"):
                block.append(lines[i])
                i += 1
            parts.append(table(block))
            continue
        heading = re.match(r"^(#{1,6}) (.*)$", line)
        image = IMAGE.match(line)
        if heading:
            level = len(heading.group(1))
            parts.append(f"<h{level}>{inline(heading.group(2))}</h{level}>")
        elif image:
            parts.append(figure(image.group("alt"), image.group("src"), folder))
        elif line:
            parts.append(f"<p>{inline(line)}</p>")
        i += 1
    if extra:
        parts.append("<h2>Reference runs' in-betweens (as committed)</h2>")
        parts += [figure(caption, str(path), Path(".")) for caption, path in extra]
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(parts) + f"\n<script>{SCRIPT}</script>\n</body></html>\n")


def write_html(folder: Path, title: str, extra: list[tuple[str, Path]] = ()) -> Path:
    """Write folder/report.html from folder/results.md and the figures beside it (and `extra`); returns its path."""
    out = Path(folder) / "report.html"
    out.write_text(to_html((Path(folder) / "results.md").read_text(), Path(folder), title, extra), encoding="utf-8")
    return out
