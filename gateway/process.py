"""Run a child process the one way this project runs them: argv list, own process group,
death signal, readiness against a deadline, terminate then kill.

    child = launch([sys.executable, "-m", "benchmarks.fake_upstream", "--port", "9000"], log=Path("fake.log"))
    try:
        seconds = child.wait_until_answers("http://127.0.0.1:9000/health", deadline_s=30)
    finally:
        child.stop(grace_s=10)

    with running(argv, url="http://127.0.0.1:9000/health", deadline_s=30, cores=[1]) as child:
        ...                                     # stopped (whole group) when the block ends

The death signal is set on the argv (`setpriv --pdeathsig TERM`, util-linux), not with a
`preexec_fn`, which is not safe in a process that runs threads. The kernel sends it when the
*thread* that started the child exits, so launch from a thread that outlives the child (the
main thread, or a supervisor's own long-lived thread). CPU pinning is argv-level too (`taskset`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from gateway.rotating_log import RotatingLog

logger = logging.getLogger("gateway.process")


class ChildExited(RuntimeError):
    """The child exited before it answered."""


class ChildTimeout(TimeoutError):
    """The child did not answer before its deadline."""


def death_signal_prefix(sig: str = "TERM") -> list[str]:
    """`setpriv --pdeathsig SIG --` where util-linux's setpriv exists, else nothing (logged once)."""
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        _warn_once("setpriv (util-linux) not found: children will not die with this process if it is killed")
        return []
    return [setpriv, "--pdeathsig", sig, "--"]


def pin_prefix(cores: Sequence[int] | None) -> list[str]:
    """`taskset --cpu-list 0,1` for `cores`, or nothing."""
    if not cores:
        return []
    taskset = shutil.which("taskset")
    if taskset is None:
        raise RuntimeError("taskset (util-linux) is needed to pin a child to cores")
    return [taskset, "--cpu-list", ",".join(map(str, cores))]


@dataclass
class Child:
    """A launched process and its group (its pid is the group id)."""

    argv: list[str]
    process: subprocess.Popen[bytes] = field(repr=False)
    pump: threading.Thread | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return self.process.poll()

    def exited(self) -> bool:
        return self.process.poll() is not None

    def signal_group(self, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def answers(self, url: str, *, client: httpx.Client, ok: frozenset[int] = frozenset({200})) -> bool:
        """One GET of `url`: True on a status in `ok`, False on any other status or transport error."""
        try:
            return client.get(url).status_code in ok
        except httpx.HTTPError:
            return False

    def wait_until_answers(
        self,
        url: str,
        *,
        deadline_s: float,
        started: float | None = None,
        interval_s: float = 0.2,
        stop: threading.Event | None = None,
    ) -> float:
        """Poll `url` until it answers 200; return seconds since `started` (default: now).

        Raises ChildExited if the process exits first, ChildTimeout after `deadline_s`, and
        InterruptedError if `stop` is set meanwhile."""
        started = time.monotonic() if started is None else started
        pause = stop if stop is not None else threading.Event()
        with httpx.Client(timeout=2) as client:
            while True:
                if self.exited():
                    raise ChildExited(f"{self.argv_text()} exited with code {self.returncode} before it answered")
                if self.answers(url, client=client):
                    return time.monotonic() - started
                if time.monotonic() - started > deadline_s:
                    raise ChildTimeout(f"{url} did not answer within {deadline_s:.0f} s")
                if pause.wait(interval_s):
                    raise InterruptedError("stopped while waiting")

    def stop(self, *, grace_s: float = 20, hurry: threading.Event | None = None) -> int | None:
        """SIGTERM the group, wait up to `grace_s` (less if `hurry` is set), then SIGKILL it.

        The group is killed either way at the end: a child's own children (vLLM's engine core)
        can outlive it. Returns the exit code."""
        if self.process.poll() is None:
            self.signal_group(signal.SIGTERM)
            end = time.monotonic() + grace_s
            while self.process.poll() is None and time.monotonic() < end:
                if hurry is not None and hurry.is_set():
                    break
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(timeout=0.1)
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        if self.pump is not None:
            self.pump.join(timeout=5)
        return self.process.returncode

    def argv_text(self) -> str:
        return " ".join(self.argv)


def launch(
    argv: Sequence[str],
    *,
    log: Path | RotatingLog | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cores: Sequence[int] | None = None,
    die_with_parent: bool = True,
) -> Child:
    """Start `argv` in a new process group, output to `log` (appended; a RotatingLog is fed
    through a pipe by a thread), stdin closed."""
    full = [*(death_signal_prefix() if die_with_parent else []), *pin_prefix(cores), *argv]
    stdout: int | None = None
    file = None
    if isinstance(log, Path):
        log.parent.mkdir(parents=True, exist_ok=True)
        file = log.open("ab")
        stdout = file.fileno()
    elif isinstance(log, RotatingLog):
        stdout = subprocess.PIPE
    try:
        process = subprocess.Popen(  # argv list, never a shell string
            full,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.STDOUT if log is not None else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    finally:
        if file is not None:
            file.close()
    child = Child(list(argv), process)
    if isinstance(log, RotatingLog):
        assert process.stdout is not None
        child.pump = threading.Thread(target=log.pump, args=(process.stdout,), name=f"log-{process.pid}", daemon=True)
        child.pump.start()
    return child


@contextlib.contextmanager
def running(
    argv: Sequence[str],
    *,
    url: str,
    deadline_s: float,
    log: Path | RotatingLog | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    cores: Sequence[int] | None = None,
    grace_s: float = 15,
) -> Iterator[Child]:
    """`launch`, wait until `url` answers 200, yield; stop the group when the block ends."""
    child = launch(argv, log=log, env=env, cwd=cwd, cores=cores)
    try:
        child.wait_until_answers(url, deadline_s=deadline_s)
        yield child
    finally:
        child.stop(grace_s=grace_s)


def exit_on_sigterm(code: int = 143) -> None:
    """Make SIGTERM unwind like Ctrl-C (SystemExit runs every `finally` and context manager), so
    a command stops the children it started. For commands that run no uvicorn server."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(code))


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        logger.warning(message)
