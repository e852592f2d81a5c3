"""A report as a list of blocks, rendered twice: Markdown (`report.md`) and one HTML file.

Writing the content once and rendering it twice keeps the two files saying the same thing.
Inline text may use three Markdown forms, which the HTML renderer translates after escaping:
`**bold**`, `` `code` `` and `[text](relative/link)`. The HTML is self-contained: images
become base64 data URIs and the style sheet is inline.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True, slots=True)
class Paragraph:
    text: str
    anchor: str = ""  # an HTML id, for links and for the browser test to find it


@dataclass(frozen=True, slots=True)
class Alert:
    """Something the reader must not miss (a correctness failure): bold, boxed in red."""

    text: str


@dataclass(frozen=True, slots=True)
class Bullets:
    items: tuple[str, ...]
    anchor: str = ""


@dataclass(frozen=True, slots=True)
class Code:
    text: str


@dataclass(frozen=True, slots=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    flagged: tuple[bool, ...] = ()  # rows printed in bold and marked as failures
    caption: str = ""


@dataclass(frozen=True, slots=True)
class Figure:
    file: str  # a PNG in the report folder
    title: str
    caption: str = ""
    anchor: str = ""


@dataclass(frozen=True, slots=True)
class Details:
    """Blocks folded under a one-line summary (`<details>`), open when `open` is set: long
    tables that matter only when something is wrong."""

    summary: str
    blocks: tuple[Heading | Paragraph | Alert | Bullets | Code | Table | Figure, ...]
    open: bool = False


Block = Heading | Paragraph | Alert | Bullets | Code | Table | Figure | Details


@dataclass(slots=True)
class Document:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


# ---- Markdown -----------------------------------------------------------------------------------


def to_markdown(doc: Document) -> str:
    out = [f"# {doc.title}", ""]
    for block in doc.blocks:
        out.extend(_markdown_block(block))
        out.append("")
    return "\n".join(out).rstrip() + "\n"


def _markdown_block(block: Block) -> list[str]:
    if isinstance(block, Heading):
        return [f"{'#' * block.level} {block.text}"]
    if isinstance(block, Paragraph):
        return [block.text]
    if isinstance(block, Alert):
        return [f"> **⚠ {block.text}**"]
    if isinstance(block, Bullets):
        return [f"- {item}" for item in block.items]
    if isinstance(block, Code):
        return ["```", block.text, "```"]
    if isinstance(block, Details):
        lines = [
            f"<details{' open' if block.open else ''}><summary>{_inline(block.summary)}</summary>",
            "",
        ]
        for inner in block.blocks:
            lines += [*_markdown_block(inner), ""]
        return [*lines, "</details>"]
    if isinstance(block, Table):
        lines = []
        if block.caption:
            lines += [block.caption, ""]
        lines.append("| " + " | ".join(_cell(h) for h in block.headers) + " |")
        lines.append("|" + "|".join("---" for _ in block.headers) + "|")
        for i, row in enumerate(block.rows):
            bad = i < len(block.flagged) and block.flagged[i]
            cells = [f"**{_cell(c)}**" if bad and c else _cell(c) for c in row]
            lines.append("| " + " | ".join(cells) + " |")
        return lines
    caption = f"\n\n*{block.caption}*" if block.caption else ""
    return [f"![{block.title}]({block.file}){caption}"]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# ---- HTML ---------------------------------------------------------------------------------------

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
tr.bad td { font-weight: bold; background: #fde2e2; }
.alert { border: 2px solid #c00; background: #fde2e2; color: #900; font-weight: bold;
         padding: 0.6em 1em; margin: 0.8em 0; }
figure { margin: 1.2em 0; }
figure img { max-width: 100%; }
figure#ratios img { max-height: 60vh; }
details > summary { cursor: pointer; font-weight: bold; margin: 0.6em 0; }
figcaption { color: #555; font-size: 0.9em; }
code, pre { background: #f6f6f6; }
pre { padding: 0.6em; overflow-x: auto; }
"""


def to_html(doc: Document, folder: Path) -> str:
    """One HTML page; figures are read from `folder` and embedded."""
    body = "\n".join(_html_block(block, folder) for block in doc.blocks)
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(doc.title)}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n"
        f"<h1>{_inline(doc.title)}</h1>\n{body}\n</body>\n</html>\n"
    )


def _html_block(block: Block, folder: Path) -> str:
    if isinstance(block, Heading):
        level = min(max(block.level, 1), 6)
        return f"<h{level}>{_inline(block.text)}</h{level}>"
    if isinstance(block, Paragraph):
        return f"<p{_id(block.anchor)}>{_inline(block.text)}</p>"
    if isinstance(block, Alert):
        return f'<div class="alert">⚠ {_inline(block.text)}</div>'
    if isinstance(block, Bullets):
        items = "".join(f"<li>{_inline(item)}</li>" for item in block.items)
        return f"<ul{_id(block.anchor)}>{items}</ul>"
    if isinstance(block, Code):
        return f"<pre><code>{html.escape(block.text)}</code></pre>"
    if isinstance(block, Table):
        return _html_table(block)
    if isinstance(block, Details):
        inner = "\n".join(_html_block(b, folder) for b in block.blocks)
        state = " open" if block.open else ""
        return f"<details{state}><summary>{_inline(block.summary)}</summary>\n{inner}\n</details>"
    data = base64.b64encode((folder / block.file).read_bytes()).decode("ascii")
    caption = f"<figcaption>{_inline(block.caption)}</figcaption>" if block.caption else ""
    return (
        f'<figure{_id(block.anchor)}><img src="data:image/png;base64,{data}" '
        f'alt="{html.escape(block.title)}">{caption}</figure>'
    )


def _id(anchor: str) -> str:
    return f' id="{html.escape(anchor)}"' if anchor else ""


def _html_table(table: Table) -> str:
    head = "".join(f"<th>{_inline(h)}</th>" for h in table.headers)
    rows = []
    for i, row in enumerate(table.rows):
        bad = i < len(table.flagged) and table.flagged[i]
        cells = "".join(f"<td>{_inline(c)}</td>" for c in row)
        rows.append(f'<tr class="bad">{cells}</tr>' if bad else f"<tr>{cells}</tr>")
    caption = f"<caption>{_inline(table.caption)}</caption>" if table.caption else ""
    return f"<table>{caption}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


_CODE = re.compile(r"`([^`]+)`")
_BOLD = re.compile(r"\*\*(.+?)\*\*")
_LINK = re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)")


def _inline(text: str) -> str:
    """Escape, then translate the three Markdown forms (code spans are left untouched)."""
    pieces: list[str] = []
    last = 0
    for match in _CODE.finditer(text):
        pieces.append(_rich(text[last : match.start()]))
        pieces.append(f"<code>{html.escape(match.group(1))}</code>")
        last = match.end()
    pieces.append(_rich(text[last:]))
    return "".join(pieces)


def _rich(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = _BOLD.sub(r"<strong>\1</strong>", escaped)
    return _LINK.sub(_anchor, escaped)


def _anchor(match: re.Match[str]) -> str:
    target = match.group(2).replace('"', "&quot;")
    return f'<a href="{target}">{match.group(1)}</a>'


def markdown_link(text: str, target: str) -> str:
    return f"[{text}]({target})"


def fmt_rows(rows: Sequence[Sequence[str]]) -> tuple[tuple[str, ...], ...]:
    return tuple(tuple(row) for row in rows)
