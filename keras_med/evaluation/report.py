"""Render a model card, given as a list of blocks, to `report.md` and a self-contained `report.html`.

The requirements carry no Markdown library, so the card is built once as plain blocks
(heading, paragraph, bullet list, table, image, collapsed section) and rendered to both formats
here; the HTML embeds every image as base64 so the file can be mailed or archived on its own.
A collapsed section is HTML's `<details>` in both files: GitHub, GitLab and Gradio render it in
Markdown too, folded.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from pathlib import Path

from keras_med.atomic import write_text_atomic


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list]


@dataclass
class Image:
    """An image file, relative to the report's directory."""
    path: str
    caption: str = ""


@dataclass
class Collapsed:
    """Blocks shown folded under a one-line summary (`<details>`), e.g. the full configuration."""
    summary: str
    blocks: list = field(default_factory=list)


def _flatten(blocks: list) -> list:
    """The blocks in reading order, those inside collapsed sections included."""
    flat = []
    for block in blocks:
        flat += [block] + _flatten(block.blocks) if isinstance(block, Collapsed) else [block]
    return flat


@dataclass
class Card:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> "Card":
        self.blocks.extend(blocks)
        return self

    def images(self) -> list[str]:
        return [block.path for block in _flatten(self.blocks) if isinstance(block, Image)]

    def headings(self) -> list[str]:
        """The section headings in reading order (collapsed sections by their summary)."""
        return [block.text if isinstance(block, Heading) else block.summary
                for block in _flatten(self.blocks) if isinstance(block, (Heading, Collapsed))]


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _markdown_lines(blocks: list) -> list[str]:
    lines = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Bullets):
            lines += [f"- {item}" for item in block.items] + [""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.headers) + " |")
            lines.append("|" + "---|" * len(block.headers))
            lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in block.rows]
            lines.append("")
        elif isinstance(block, Image):
            lines += [f"![{block.caption}]({block.path})", ""]
            if block.caption:
                lines += [f"*{block.caption}*", ""]
        elif isinstance(block, Collapsed):
            # The blank line after <summary> lets Markdown renderers format the folded blocks.
            lines += ["<details>", f"<summary>{html.escape(block.summary)}</summary>", ""]
            lines += _markdown_lines(block.blocks) + ["</details>", ""]
    return lines


def render_markdown(card: Card) -> str:
    """The card as Markdown; images are linked by their relative path."""
    return "\n".join([f"# {card.title}", ""] + _markdown_lines(card.blocks))


def _html_parts(blocks: list, base_dir: Path) -> list[str]:
    parts = []
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{html.escape(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{html.escape(block.text)}</p>")
        elif isinstance(block, Bullets):
            parts.append("<ul>" + "".join(f"<li>{html.escape(item)}</li>" for item in block.items) + "</ul>")
        elif isinstance(block, Table):
            header = "".join(f"<th>{html.escape(h)}</th>" for h in block.headers)
            rows = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in row) + "</tr>"
                           for row in block.rows)
            parts.append(f"<table><tr>{header}</tr>{rows}</table>")
        elif isinstance(block, Image):
            data = base64.b64encode((base_dir / block.path).read_bytes()).decode("ascii")
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{html.escape(block.caption)}'>"
                         f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
        elif isinstance(block, Collapsed):
            parts += [f"<details><summary>{html.escape(block.summary)}</summary>",
                      *_html_parts(block.blocks, base_dir), "</details>"]
    return parts


def render_html(card: Card, base_dir: str | Path) -> str:
    """The card as one HTML page with every image embedded (paths resolved against `base_dir`)."""
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>",
             f"<title>{html.escape(card.title)}</title><style>",
             "body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}",
             "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 8px;"
             "text-align:right}th{background:#f0f0f0}td:first-child{text-align:left}",
             "img{max-width:100%}figure{margin:1em 0}figcaption{color:#555;font-size:90%}",
             "summary{cursor:pointer;font-weight:bold;font-size:120%;margin:1em 0}",
             f"</style></head><body><h1>{html.escape(card.title)}</h1>"]
    parts += _html_parts(card.blocks, Path(base_dir))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_card(card: Card, out_dir: str | Path) -> tuple[Path, Path]:
    """Write `report.md` and `report.html` into `out_dir`; every referenced image must exist there."""
    out_dir = Path(out_dir)
    missing = [path for path in card.images() if not (out_dir / path).is_file()]
    if missing:
        raise FileNotFoundError(f"report images missing from {out_dir}: {missing}")
    markdown_path, html_path = out_dir / "report.md", out_dir / "report.html"
    write_text_atomic(markdown_path, render_markdown(card))
    write_text_atomic(html_path, render_html(card, out_dir))
    return markdown_path, html_path
