"""A size-capped log file with numbered backups, fed with raw bytes (a child's output).

    log = RotatingLog(Path("logs/r1.log"), max_bytes=20 * 2**20, backups=3)
    log.write(b"=== starting\\n")
    threading.Thread(target=log.pump, args=(process.stdout,), daemon=True).start()
    log.text()                    # what is kept: the backups, oldest first, then the current file

When the current file would pass `max_bytes`, it becomes `r1.log.1` (`.1` becomes `.2`, ...,
the oldest beyond `backups` is deleted), so the files never hold more than
`(backups + 1) x max_bytes`. Rotation happens at line ends where it can, so a line is not split
between two files.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import IO


class RotatingLog:
    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        if max_bytes <= 0 or backups < 0:
            raise ValueError("max_bytes must be positive and backups not negative")
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = path.open("ab")
        self._size = self._file.tell()

    def write(self, data: bytes) -> None:
        with self._lock:
            if self._file.closed:  # written again after close(): an engine started anew
                self._file = self.path.open("ab")
                self._size = self._file.tell()
            while data:
                room = self.max_bytes - self._size
                if len(data) <= room:
                    self._put(data)
                    return
                cut = data.rfind(b"\n", 0, room) + 1 if room > 0 else 0
                if cut == 0 and self._size == 0:
                    cut = room  # one line longer than a whole file: split it
                if cut:
                    self._put(data[:cut])
                    data = data[cut:]
                self._rotate()

    def pump(self, stream: IO[bytes]) -> None:
        """Copy `stream` (a pipe) into the log until it closes."""
        with stream:
            while chunk := os.read(stream.fileno(), 65536):
                self.write(chunk)

    def files(self) -> list[Path]:
        """The files kept, oldest first."""
        backups = [self.path.with_name(f"{self.path.name}.{i}") for i in range(self.backups, 0, -1)]
        return [p for p in [*backups, self.path] if p.exists()]

    def text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.files())

    def close(self) -> None:
        with self._lock:
            self._file.close()

    def _put(self, data: bytes) -> None:
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            oldest = self.path.with_name(f"{self.path.name}.{self.backups}")
            oldest.unlink(missing_ok=True)
            for i in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{i}")
                if older.exists():
                    older.rename(self.path.with_name(f"{self.path.name}.{i + 1}"))
            self.path.rename(self.path.with_name(f"{self.path.name}.1"))
        self._file = self.path.open("ab")
        self._size = 0
