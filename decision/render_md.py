"""Render a Report as Markdown (report.md): GitHub-flavoured tables, images beside the file.

text = render_markdown(report)
"""

from __future__ import annotations

import html

from decision.document import Block, Bullets, Example, Image, Missing, Notice, Paragraph, Report, Source, Table


def render_markdown(report: Report) -> str:
    lines = [f"# {report.title}", "", f"Built {report.created}.", ""]
    for section in report.sections:
        if section.key != "notice":
            lines += [f"## {section.title}", ""]
        for block in section.blocks:
            lines += _block(block)
    return "\n".join(lines).rstrip() + "\n"


def _block(block: Block) -> list[str]:
    if isinstance(block, Notice):
        return [f"> **{block.title}.** {block.text}", ""]
    if isinstance(block, Paragraph):
        return [block.text, ""]
    if isinstance(block, Bullets):
        marks = [f"{i}." if block.ordered else "-" for i in range(1, len(block.items) + 1)]
        return [*(f"{mark} {item}" for mark, item in zip(marks, block.items, strict=True)), ""]
    if isinstance(block, Missing):
        return [f"> **Not measured:** {block.what}. Produce it with {block.command}.", ""]
    if isinstance(block, Table):
        out = [block.caption, ""] if block.caption else []
        out.append("| " + " | ".join(_cell(h) for h in block.header) + " |")
        out.append("|" + "|".join("---" for _ in block.header) + "|")
        out += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in block.rows]
        return [*out, "", *_sources(block.sources)]
    if isinstance(block, Image):
        return [f"![{block.alt}]({block.name})", "", *_sources(block.sources)]
    if isinstance(block, Example):
        out = [
            f"#### {block.title}",
            "",
            "<details><summary>Prompt</summary>",
            "",
            _pre(block.prompt),
            "</details>",
            "",
        ]
        for heading, answer, reasoning in block.answers:
            out += [f"**{heading}**", "", _pre(answer or "(empty answer)"), ""]
            if reasoning:
                out += [f"<details><summary>reasoning ({len(reasoning):,} characters)</summary>", "",
                        _pre(reasoning), "</details>", ""]  # fmt: skip
        return [*out, *_sources(block.sources)]
    raise TypeError(f"unknown block {block!r}")


def _sources(sources: list[Source]) -> list[str]:
    if not sources:
        return []
    return ["Source: " + "; ".join(s.link() + (f" ({s.note})" if s.note else "") for s in sources), ""]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _pre(text: str) -> str:
    return f"<pre>{html.escape(text)}</pre>"
