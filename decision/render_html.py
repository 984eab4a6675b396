"""Render a Report as one self-contained HTML file: styles inline, plots as base64 PNG, no
scripts, no external requests. Links go to the copies under sources/ beside it, so it opens
from disk and from the gateway's /report/ alike.

    text = render_html(report)
"""

from __future__ import annotations

import base64
import html
import re

from decision.document import Block, Bullets, Example, Image, Missing, Notice, Paragraph, Report, Source, Table

_INLINE = re.compile(r"`([^`]+)`|\*\*(.+?)\*\*|\[([^\]]+)\]\(([^)\s]+)\)")

STYLE = """
body { font: 15px/1.5 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 1.5rem; color: #1f2937; }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; } h2 { border-bottom: 2px solid #e5e7eb; padding-bottom: 0.2rem;
margin-top: 2rem; } h4 { margin-bottom: 0.3rem; }
table { border-collapse: collapse; margin: 0.5rem 0; font-size: 0.88rem; width: 100%; }
th, td { border: 1px solid #d1d5db; padding: 0.3rem 0.5rem; text-align: left; vertical-align: top; }
th { background: #f3f4f6; } tr:nth-child(even) td { background: #fafafa; }
code { background: #f3f4f6; padding: 0 0.2rem; border-radius: 3px; font-size: 0.9em; }
.notice { border: 2px solid #b45309; background: #fffbeb; padding: 0.8rem 1rem; border-radius: 6px; }
.missing { border-left: 4px solid #9ca3af; background: #f9fafb; padding: 0.4rem 0.8rem; color: #374151; }
.source { font-size: 0.8rem; color: #6b7280; } .caption { font-size: 0.88rem; color: #374151; }
img { max-width: 100%; border: 1px solid #e5e7eb; }
pre { white-space: pre-wrap; background: #f9fafb; border: 1px solid #e5e7eb; padding: 0.5rem; font-size: 0.82rem; }
.example { border: 1px solid #e5e7eb; border-radius: 6px; padding: 0.5rem 1rem; margin: 0.8rem 0; }
"""


def render_html(report: Report) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(report.title)}</title><style>{STYLE}</style></head><body>",
        f"<h1>{html.escape(report.title)}</h1><p class='source'>Built {html.escape(report.created)}.</p>",
    ]
    for section in report.sections:
        parts.append(f'<section id="{section.key}">')
        if section.key != "notice":
            parts.append(f"<h2>{html.escape(section.title)}</h2>")
        parts += [_block(b) for b in section.blocks]
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def inline(text: str) -> str:
    """`code`, **bold** and [links](href) to HTML; everything else escaped."""
    out, last = [], 0
    for match in _INLINE.finditer(text):
        out.append(html.escape(text[last : match.start()]))
        code, bold, label, href = match.groups()
        if code is not None:
            out.append(f"<code>{html.escape(code)}</code>")
        elif bold is not None:
            out.append(f"<strong>{inline(bold)}</strong>")
        else:
            out.append(f'<a href="{html.escape(href, quote=True)}">{html.escape(label)}</a>')
        last = match.end()
    out.append(html.escape(text[last:]))
    return "".join(out)


def _block(block: Block) -> str:
    if isinstance(block, Notice):
        return (
            f'<div class="notice" role="note"><strong>{html.escape(block.title)}.</strong> {inline(block.text)}</div>'
        )
    if isinstance(block, Paragraph):
        return f"<p>{inline(block.text)}</p>"
    if isinstance(block, Bullets):
        tag = "ol" if block.ordered else "ul"
        return f"<{tag}>" + "".join(f"<li>{inline(item)}</li>" for item in block.items) + f"</{tag}>"
    if isinstance(block, Missing):
        return (
            f'<p class="missing"><strong>Not measured:</strong> {inline(block.what)}. '
            f"Produce it with {inline(block.command)}.</p>"
        )
    if isinstance(block, Table):
        head = "".join(f"<th>{inline(h)}</th>" for h in block.header)
        body = "".join("<tr>" + "".join(f"<td>{inline(c)}</td>" for c in row) + "</tr>" for row in block.rows)
        caption = f'<p class="caption">{inline(block.caption)}</p>' if block.caption else ""
        return f"{caption}<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>{_sources(block.sources)}"
    if isinstance(block, Image):
        data = base64.b64encode(block.png).decode()
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block.alt, quote=True)}" '
            f'data-name="{html.escape(block.name, quote=True)}"></figure>{_sources(block.sources)}'
        )
    if isinstance(block, Example):
        parts = [f'<div class="example"><h4>{inline(block.title)}</h4>',
                 f"<details><summary>Prompt</summary><pre>{html.escape(block.prompt)}</pre></details>"]  # fmt: skip
        for heading, answer, reasoning in block.answers:
            parts.append(
                f"<p><strong>{inline(heading)}</strong></p><pre>{html.escape(answer or '(empty answer)')}</pre>"
            )
            if reasoning:
                parts.append(
                    f'<details class="reasoning"><summary>reasoning ({len(reasoning):,} characters)</summary>'
                    f"<pre>{html.escape(reasoning)}</pre></details>"
                )
        parts.append(_sources(block.sources) + "</div>")
        return "".join(parts)
    raise TypeError(f"unknown block {block!r}")


def _sources(sources: list[Source]) -> str:
    if not sources:
        return ""
    links = "; ".join(inline(s.link()) + (f" ({html.escape(s.note)})" if s.note else "") for s in sources)
    return f'<p class="source">Source: {links}</p>'
