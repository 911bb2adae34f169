"""A report document rendered as Markdown (figures linked) and self-contained HTML (figures embedded).

Studies build a ``Report`` from stored results; ``write(run_dir)`` produces ``report.md`` and ``report.html``.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..store import atomic_write_text


def format_value(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v):
            return "–"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 10 ** (-digits)):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(headers: list[str], rows: list[list[Any]], digits: int = 3) -> str:
    """A GitHub-flavoured Markdown table; floats rounded to ``digits`` decimals, None/NaN as '–'."""
    cells = [[format_value(c, digits) for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(["---"] * len(headers)) + "|"]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in cells]
    return "\n".join(lines)


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""
    digits: int = 3


@dataclass
class Figure:
    path: Path
    caption: str = ""


@dataclass
class Report:
    """An ordered list of blocks: headings, paragraphs, tables, figures."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> None:
        self.blocks.append(("heading", (level, text)))

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, headers: list[str], rows: list[list[Any]], caption: str = "", digits: int = 3) -> None:
        self.blocks.append(("table", Table(headers, rows, caption, digits)))

    def figure(self, path: str | Path, caption: str = "") -> None:
        self.blocks.append(("figure", Figure(Path(path), caption)))

    def to_markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                out += ["#" * value[0] + " " + value[1], ""]
            elif kind == "paragraph":
                out += [value, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "table":
                if value.caption:
                    out += [f"*{value.caption}*", ""]
                out += [markdown_table(value.headers, value.rows, value.digits), ""]
            elif kind == "figure":
                rel = value.path.relative_to(base) if value.path.is_relative_to(base) else value.path
                out += [f"![{value.caption}]({rel.as_posix()})", "", f"*{value.caption}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>",
                 "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
                 "color:#222}table{border-collapse:collapse;margin:1em 0;font-size:.9em}"
                 "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right}th{background:#eee}"
                 "td:first-child,th:first-child{text-align:left}caption{caption-side:top;font-style:italic;"
                 "text-align:left;padding:.3em 0}figure{margin:1em 0}img{max-width:100%}"
                 "figcaption{font-style:italic;color:#555}</style></head><body>",
                 f"<h1>{html.escape(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"<h{value[0]}>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "paragraph":
                parts.append(f"<p>{html.escape(value)}</p>")
            elif kind == "bullets":
                parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in value.headers)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(c, value.digits))}</td>"
                                                for c in row) + "</tr>" for row in value.rows)
                cap = f"<caption>{html.escape(value.caption)}</caption>" if value.caption else ""
                parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif kind == "figure":
                if value.path.is_file():
                    data = base64.b64encode(value.path.read_bytes()).decode()
                    img = f"<img src='data:image/png;base64,{data}' alt='{html.escape(value.caption)}'>"
                else:
                    img = f"<p>(missing figure {html.escape(str(value.path))})</p>"
                parts.append(f"<figure>{img}<figcaption>{html.escape(value.caption)}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def write(self, run_dir: str | Path) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.html`` into ``run_dir``; returns both paths."""
        run_dir = Path(run_dir)
        md, page = run_dir / "report.md", run_dir / "report.html"
        atomic_write_text(md, self.to_markdown(run_dir))
        atomic_write_text(page, self.to_html())
        return md, page
