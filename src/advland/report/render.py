"""A report as a list of Markdown blocks, rendered to report.md and to one HTML page.

The Markdown is the source of truth: the HTML page is that Markdown rendered by
markdown-it (CommonMark with tables and raw HTML, for `<details>`), with every
figure embedded as a base64 PNG so that the page stands alone.
"""

from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from markdown_it import MarkdownIt

NUMBER = re.compile(r"^[-+]?(\d[\d.]*|\.\d+)(e[-+]?\d+)?( ± .*)?$")
STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:auto;padding:1em;"
    "line-height:1.45}table{border-collapse:collapse;font-size:13px;margin:1em 0}"
    "td,th{border:1px solid #ccc;padding:2px 6px}th{background:#f3f3f3}"
    "img{max-width:100%}code{background:#f3f3f3;padding:0 3px}"
    "details{margin:1em 0}summary{cursor:pointer;font-weight:bold}"
)


@dataclass
class Figure:
    path: Path
    caption: str


@dataclass
class Details:
    summary: str
    inner: Document


def data_uri(png: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(png.read_bytes()).decode()


def _cell(value, floatfmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A pipe table; a column is right-aligned when every cell in it is a number
    (or a number ± its CI)."""
    cells = [[_cell(v, floatfmt) for v in row] for row in frame.itertuples(index=False)]
    columns = [str(c) for c in frame.columns]
    right = [
        any(r[j] for r in cells) and all(NUMBER.match(r[j]) for r in cells if r[j])
        for j in range(len(columns))
    ]
    lines = [
        "| " + " | ".join(columns) + " |",
        "|" + "|".join("---:" if r else ":---" for r in right) + "|",
    ]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


@dataclass
class Document:
    """Blocks of Markdown text, figures and collapsed sections, in order."""

    blocks: list[str | Figure | Details] = field(default_factory=list)

    def h(self, text: str, level: int = 2) -> None:
        self.blocks.append("#" * level + " " + text)

    def p(self, text: str) -> None:
        self.blocks.append(text)

    def bullets(self, items: list[str]) -> None:
        self.blocks.append("\n".join(f"- {item}" for item in items))

    def table(self, frame: pd.DataFrame, floatfmt: str = ".4g") -> None:
        self.blocks.append(markdown_table(frame, floatfmt))

    def figure(self, path: Path, caption: str) -> None:
        self.blocks.append(Figure(path, caption))

    def details(self, summary: str, inner: Document) -> None:
        self.blocks.append(Details(summary, inner))

    def extend(self, other: Document) -> None:
        self.blocks.extend(other.blocks)

    def figures(self) -> list[Path]:
        """The figure files the document shows, collapsed sections included."""
        inner = [b.inner.figures() for b in self.blocks if isinstance(b, Details)]
        return [b.path for b in self.blocks if isinstance(b, Figure)] + sum(inner, [])

    def markdown(self, relative_to: Path, embed: bool = False) -> str:
        """Figures link to their files relative to `relative_to`, or with `embed`
        carry their PNG as a data URI."""
        parts = []
        for block in self.blocks:
            if isinstance(block, Figure):
                src = (
                    data_uri(block.path)
                    if embed
                    else block.path.relative_to(relative_to).as_posix()
                )
                parts.append(f"![{block.path.stem}]({src})\n\n*{block.caption}*")
            elif isinstance(block, Details):
                inner = block.inner.markdown(relative_to, embed).strip()
                summary = f"<details>\n<summary>{block.summary}</summary>"
                parts.append(f"{summary}\n\n{inner}\n\n</details>")
            else:
                parts.append(block)
        return "\n\n".join(parts) + "\n"

    def html(self, title: str) -> str:
        """One self-contained page: the embedded Markdown rendered by markdown-it."""
        renderer = MarkdownIt("commonmark", {"html": True}).enable("table")
        body = renderer.render(self.markdown(Path("."), embed=True))
        head = f"<meta charset='utf-8'><title>{html.escape(title)}</title><style>{STYLE}</style>"
        return f"<!doctype html>\n<html><head>{head}</head>\n<body>\n{body}</body></html>\n"
