"""The report as a list of sections made of a few kinds of blocks, rendered to Markdown and HTML.

    section = Section("speed", "3. Speed", [Paragraph("..."), Table(header, rows, sources=[href])])
    render_markdown(report)   # decision.render_md
    render_html(report)       # decision.render_html

Text in blocks may use three inline marks, the same in both renderers: `code`, **bold** and
[links](href). Nothing else is interpreted: the HTML renderer escapes everything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    """A file a figure came from: where it was (`origin`, repo-relative when inside the repo)
    and the copy inside the report directory the report links to (`href`)."""

    origin: str
    href: str
    note: str = ""

    def link(self) -> str:
        return f"[{self.origin}]({self.href})"


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Notice:
    """A boxed warning at the top of the report (or a section)."""

    title: str
    text: str


@dataclass(frozen=True)
class Bullets:
    items: list[str]
    ordered: bool = False


@dataclass(frozen=True)
class Table:
    header: list[str]
    rows: list[list[str]]
    sources: list[Source] = field(default_factory=list)
    caption: str = ""


@dataclass(frozen=True)
class Image:
    """A PNG written next to the report (`name`) and embedded in the HTML."""

    name: str
    alt: str
    png: bytes
    sources: list[Source] = field(default_factory=list)


@dataclass(frozen=True)
class Example:
    """One evaluated item where exactly one model was right: both answers, reasoning folded."""

    title: str
    prompt: str
    answers: list[tuple[str, str, str]]  # (heading, answer, reasoning)
    sources: list[Source] = field(default_factory=list)


@dataclass(frozen=True)
class Missing:
    """A measurement that is not there: what is missing and how to produce it (inline-marked
    text, commands in backticks)."""

    what: str
    command: str


Block = Paragraph | Notice | Bullets | Table | Image | Example | Missing


@dataclass
class Section:
    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)


@dataclass
class Report:
    title: str
    created: str
    sections: list[Section]
    data: dict[str, object]  # report.json: every number the sections show, plus the decision
