"""A report document rendered as Markdown (figures linked) and self-contained HTML (figures embedded).

Studies build a ``Report`` from stored results; ``write(run_dir)`` produces ``report.md`` and ``report.html``.
A report opens with what a reader needs in 30 seconds: the provenance line (what produced the numbers), the
findings (verdicts with their numbers, each linking to its section) and a table of contents; then the sections.
Table cells may be intervals (``{"estimate", "lo", "hi"}``), shown as ``0.950 [0.930, 0.970]``.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..store import atomic_write_text


def is_interval(v: Any) -> bool:
    """Whether ``v`` is an interval cell: a mapping with ``estimate``, ``lo`` and ``hi``."""
    return isinstance(v, dict) and {"estimate", "lo", "hi"} <= set(v)


def format_interval(v: dict[str, Any], digits: int = 3) -> str:
    """``estimate [lo, hi]`` (the interval left out when its bounds are missing or equal to the estimate)."""
    est = format_value(v.get("estimate"), digits)
    lo, hi = v.get("lo"), v.get("hi")
    if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or (lo == hi == v["estimate"]):
        return est
    return f"{est} [{format_value(float(lo), digits)}, {format_value(float(hi), digits)}]"


def format_value(v: Any, digits: int = 3) -> str:
    if v is None:
        return "–"
    if is_interval(v):
        return format_interval(v, digits)
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


def slug(text: str) -> str:
    """An HTML id / Markdown anchor for a heading: lower case, letters and digits joined by '-'."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"


#: Stage names whose type is two tokens long (every other stage's type is its first '-'-separated token).
TWO_TOKEN_STAGE_TYPES = ("min-eps", "cross-attack")


def stage_type(name: str) -> str:
    """The type of a stage from its name: ``adv-bim-train`` → ``adv``, ``min-eps-s0-balanced`` → ``min-eps``."""
    for prefix in TWO_TOKEN_STAGE_TYPES:
        if name == prefix or name.startswith(prefix + "-"):
            return prefix
    return name.split("-", 1)[0]


def timings_summary(timings: list[dict[str, Any]]) -> list[list[Any]]:
    """Stage timings per stage type (first-seen order): [type, stages, computed, cached, seconds computing]."""
    groups: dict[str, list[Any]] = {}
    for t in timings:
        g = groups.setdefault(stage_type(t["stage"]), [stage_type(t["stage"]), 0, 0, 0, 0.0])
        g[1] += 1
        if t["cached"]:
            g[3] += 1
        else:
            g[2] += 1
            g[4] += float(t["seconds"])
    return list(groups.values())


#: Page style: body at most ~1000 px, figures and tables never wider than the column (tables scroll inside
#: their own box on narrow screens), readable at 800 px.
CSS = ("body{font-family:system-ui,sans-serif;max-width:1000px;margin:1.5em auto;padding:0 1em;color:#222;"
       "line-height:1.45}h1{font-size:1.6em}h2{margin-top:1.8em;border-bottom:1px solid #ddd}"
       ".provenance{color:#555;font-size:.85em}.findings{background:#f4f7fb;border-left:4px solid #3b6ea8;"
       "padding:.2em 1em}.findings h2{border:0;margin-top:.6em}.findings li{margin:.35em 0}"
       ".toc ol{columns:2;column-gap:2em}.scroll{overflow-x:auto;max-width:100%}"
       "table{border-collapse:collapse;margin:1em 0;font-size:.9em}"
       "td,th{border:1px solid #bbb;padding:.25em .6em;text-align:right;white-space:nowrap}"
       "th{background:#eee;white-space:normal}td:first-child,th:first-child{text-align:left;white-space:normal;"
       "min-width:8em}caption{caption-side:top;font-style:italic;text-align:left;padding:.3em 0}"
       "figure{margin:1em 0}img{max-width:100%;height:auto;display:block}"
       "figcaption{font-style:italic;color:#555}details{margin:1em 0}summary{cursor:pointer}"
       "p,li{overflow-wrap:anywhere}")


@dataclass
class Table:
    headers: list[str]
    rows: list[list[Any]]
    caption: str = ""
    digits: int = 3
    folded: str | None = None  # a summary line: the table is folded away (HTML <details>) behind it


@dataclass
class Figure:
    path: Path
    caption: str = ""


@dataclass
class Report:
    """A header (provenance, findings, table of contents) and an ordered list of blocks: headings,
    paragraphs, tables, figures."""

    title: str
    blocks: list[tuple[str, Any]] = field(default_factory=list)
    findings: list[dict[str, str]] = field(default_factory=list)
    provenance: dict[str, Any] = field(default_factory=dict)

    def set_findings(self, findings: list[dict[str, str]]) -> None:
        """The verdicts shown first: ``[{"text": ..., "section": anchor of a heading}]``."""
        self.findings = [dict(f) for f in findings]

    def set_provenance(self, provenance: dict[str, Any] | None) -> None:
        """What produced the results (``results["provenance"]``): shown under the title."""
        self.provenance = dict(provenance or {})

    def heading(self, text: str, level: int = 2, anchor: str | None = None) -> str:
        """Add a heading; returns its anchor (``anchor`` or the slug of ``text``, made unique)."""
        taken = {v[2] for k, v in self.blocks if k == "heading"}
        base = anchor or slug(text)
        anchor, i = base, 2
        while anchor in taken:
            anchor, i = f"{base}-{i}", i + 1
        self.blocks.append(("heading", (level, text, anchor)))
        return anchor

    def anchors(self) -> list[str]:
        return [v[2] for k, v in self.blocks if k == "heading"]

    def timings(self, timings: list[dict[str, Any]], heading: str = "Stage timings") -> None:
        """A section with the stage timings summed per stage type; the full list folded away."""
        self.heading(heading, anchor="timings")
        computed = sum(not t["cached"] for t in timings)
        self.paragraph(f"{len(timings)} stages: {computed} computed in "
                       f"{sum(float(t['seconds']) for t in timings if not t['cached']):.1f} s, "
                       f"{len(timings) - computed} served from the cache.")
        self.table(["stage type", "stages", "computed", "cached", "seconds computing"], timings_summary(timings),
                   digits=1)
        self.table(["stage", "seconds"], [[t["stage"], "cached" if t["cached"] else t["seconds"]] for t in timings],
                   digits=1, folded=f"all {len(timings)} stages")

    def _provenance_text(self) -> str:
        p = self.provenance
        if not p:
            return ""
        commit = p.get("git_commit")
        parts = [f"advsal {p.get('advsal', '?')}" + (f" (commit {str(commit)[:10]})" if commit else ""),
                 f"torch {p.get('torch', '?')}", f"Python {p.get('python', '?')}",
                 f"device {p.get('device', '?')} ({p.get('torch_threads', '?')} threads)",
                 f"platform {p.get('platform', '?')}", f"seed {p.get('seed')}"]
        if p.get("detector_seeds") is not None:
            parts.append(f"detector seeds {p['detector_seeds']}")
        parts += [f"config {str(p.get('config_hash', '?'))[:12]}", f"run on {p.get('date', '?')}"]
        if p.get("wall_seconds") is not None:
            parts.append(f"wall time {float(p['wall_seconds']):.1f} s")
        return "Produced by " + "; ".join(parts) + "."

    def _contents(self) -> list[tuple[str, str]]:
        return [(v[1], v[2]) for k, v in self.blocks if k == "heading" and v[0] == 2]

    def paragraph(self, text: str) -> None:
        self.blocks.append(("paragraph", text))

    def bullets(self, items: list[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, headers: list[str], rows: list[list[Any]], caption: str = "", digits: int = 3,
              folded: str | None = None) -> None:
        self.blocks.append(("table", Table(headers, rows, caption, digits, folded)))

    def figure(self, path: str | Path, caption: str = "") -> None:
        self.blocks.append(("figure", Figure(Path(path), caption)))

    def to_markdown(self, base: Path) -> str:
        out = [f"# {self.title}", ""]
        if self.provenance:
            out += [f"*{self._provenance_text()}*", ""]
        if self.findings:
            out += ["## Findings", ""]
            out += [f"- {f['text']} ([details](#{f['section']}))" for f in self.findings] + [""]
        contents = self._contents()
        if contents:
            out += ["## Contents", ""] + [f"{i}. [{t}](#{a})" for i, (t, a) in enumerate(contents, 1)] + [""]
        for kind, value in self.blocks:
            if kind == "heading":
                out += [f'<a id="{value[2]}"></a>', "", "#" * value[0] + " " + value[1], ""]
            elif kind == "paragraph":
                out += [value, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "table":
                if value.folded:
                    out += [f"<details><summary>{value.folded}</summary>", ""]
                if value.caption:
                    out += [f"*{value.caption}*", ""]
                out += [markdown_table(value.headers, value.rows, value.digits), ""]
                if value.folded:
                    out += ["</details>", ""]
            elif kind == "figure":
                rel = value.path.relative_to(base) if value.path.is_relative_to(base) else value.path
                out += [f"![{value.caption}]({rel.as_posix()})", "", f"*{value.caption}*", ""]
        return "\n".join(out)

    def to_html(self) -> str:
        parts = [f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
                 "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                 f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head><body>",
                 f"<h1>{html.escape(self.title)}</h1>"]
        if self.provenance:
            parts.append(f"<p class='provenance'>{html.escape(self._provenance_text())}</p>")
        if self.findings:
            items = "".join(f"<li>{html.escape(f['text'])} <a href='#{html.escape(f['section'])}'>details</a></li>"
                            for f in self.findings)
            parts.append(f"<section class='findings' id='findings'><h2>Findings</h2><ul>{items}</ul></section>")
        contents = self._contents()
        if contents:
            items = "".join(f"<li><a href='#{html.escape(a)}'>{html.escape(t)}</a></li>" for t, a in contents)
            parts.append(f"<nav class='toc'><h2>Contents</h2><ol>{items}</ol></nav>")
        for kind, value in self.blocks:
            if kind == "heading":
                parts.append(f"<h{value[0]} id='{html.escape(value[2])}'>{html.escape(value[1])}</h{value[0]}>")
            elif kind == "paragraph":
                parts.append(f"<p>{html.escape(value)}</p>")
            elif kind == "bullets":
                parts.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                head = "".join(f"<th>{html.escape(h)}</th>" for h in value.headers)
                body = "".join("<tr>" + "".join(f"<td>{html.escape(format_value(c, value.digits))}</td>"
                                                for c in row) + "</tr>" for row in value.rows)
                cap = f"<caption>{html.escape(value.caption)}</caption>" if value.caption else ""
                table = (f"<div class='scroll'><table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody>"
                         "</table></div>")
                if value.folded:
                    table = f"<details><summary>{html.escape(value.folded)}</summary>{table}</details>"
                parts.append(table)
            elif kind == "figure":
                if value.path.is_file():
                    data = base64.b64encode(value.path.read_bytes()).decode()
                    img = f"<img src='data:image/png;base64,{data}' alt='{html.escape(value.caption)}'>"
                else:
                    img = f"<p>(missing figure {html.escape(str(value.path))})</p>"
                parts.append(f"<figure>{img}<figcaption>{html.escape(value.caption)}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def check_links(self) -> None:
        """Every finding must link to a heading of this report (a renderer bug otherwise)."""
        missing = [f["section"] for f in self.findings if f["section"] not in self.anchors()]
        if missing:
            raise InputError(f"findings link to sections the report lacks: {missing}; anchors: {self.anchors()}")

    def write(self, run_dir: str | Path) -> tuple[Path, Path]:
        """Write ``report.md`` and ``report.html`` into ``run_dir``; returns both paths."""
        self.check_links()
        run_dir = Path(run_dir)
        md, page = run_dir / "report.md", run_dir / "report.html"
        atomic_write_text(md, self.to_markdown(run_dir))
        atomic_write_text(page, self.to_html())
        return md, page
