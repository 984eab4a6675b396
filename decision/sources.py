"""Copies of the files a report's figures came from, kept in the report directory.

    sources = SourceStore(root=ROOT)
    src = sources.file(Path("results/bench/full-cpu/results.json"))   # Source(origin, href="sources/...")
    src = sources.data("votes.json", rows, origin=".cache/votes.sqlite3", note="per-vote rows")
    sources.write(out_dir)                                             # copies everything under out/sources/

Why copies: the report must open from disk and from the gateway's `/report/` with working links,
and results directories get rerun; the copy is what the report was built from, and `origin`
(with the sha256 in report.json) names where it came from.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from decision.document import Source


class SourceStore:
    def __init__(self, root: Path, results_dir: Path | None = None) -> None:
        self.root = root.resolve()
        self.results_dir = (results_dir or root / "results").resolve()
        self._files: dict[str, Path] = {}  # href -> file to copy
        self._data: dict[str, bytes] = {}  # href -> bytes to write
        self._sources: dict[str, Source] = {}

    def origin(self, path: Path) -> str:
        """The path as a reader of the repo would write it."""
        resolved = path.resolve()
        return str(resolved.relative_to(self.root)) if resolved.is_relative_to(self.root) else str(resolved)

    def file(self, path: Path, note: str = "") -> Source:
        origin = self.origin(path)
        resolved = path.resolve()
        if resolved.is_relative_to(self.results_dir):  # results/bench/x/results.json -> sources/bench/x/results.json
            relative = str(resolved.relative_to(self.results_dir))
        elif resolved.is_relative_to(self.root):
            relative = origin
        else:
            relative = f"external/{resolved.parent.name}/{resolved.name}"
        href = f"sources/{relative}"
        if href not in self._sources:
            self._files[href] = path
            self._sources[href] = Source(origin, href, note)
        return self._sources[href]

    def data(self, name: str, value: Any, *, origin: str, note: str = "") -> Source:
        href = f"sources/{name}"
        self._data[href] = (json.dumps(value, indent=2, ensure_ascii=False) + "\n").encode()
        self._sources[href] = Source(origin, href, note)
        return self._sources[href]

    def listing(self) -> list[dict[str, str]]:
        """For report.json: every source with its sha256."""
        out = []
        for href, source in sorted(self._sources.items()):
            content = self._data.get(href)
            digest = hashlib.sha256(content if content is not None else self._files[href].read_bytes()).hexdigest()
            out.append({"origin": source.origin, "copy": href, "sha256": digest, "note": source.note})
        return out

    def write(self, out_dir: Path) -> None:
        for href, path in self._files.items():
            target = out_dir / href
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
        for href, content in self._data.items():
            target = out_dir / href
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content)
