"""Start, watch and stop local vLLM engines as subprocesses.

    supervisor = EngineSupervisor(config, log_dir=Path("logs"))
    supervisor.start_all()          # blocks until every engine answers /health, or raises
    ...
    supervisor.stop_all()           # SIGTERM each process group, wait, then SIGKILL

Each engine is launched from an argument list (never a shell string) in its own process
group, so vLLM's worker processes are stopped with it, and with PR_SET_PDEATHSIG so it
dies if the supervising process is killed outright. Readiness is `GET /health` polled
against a deadline; an engine that exits while starting fails fast with its log tail.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.config import DeploymentConfig, EngineSpec, Platform
from gateway.errors import EngineStartupError

_PR_SET_PDEATHSIG = 1


class EngineState(enum.StrEnum):
    STOPPED = "stopped"
    STARTING = "starting"
    READY = "ready"
    FAILED = "failed"


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class EngineProcess:
    """One engine: its spec, its process and what we last saw of it."""

    name: str
    spec: EngineSpec
    platform: Platform
    log_path: Path
    python: str = sys.executable
    state: EngineState = EngineState.STOPPED
    restarts: int = 0
    failures_in_a_row: int = 0
    restart_at: float | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    @property
    def argv(self) -> list[str]:
        return self.spec.to_argv(self.name, python=self.python)

    def start(self) -> None:
        """Launch the process (call from the main thread: PDEATHSIG follows the forking thread)."""
        if self.process is not None:  # a restart: reap what is left of the previous run's group
            _signal_group(self.process.pid, signal.SIGKILL)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = os.environ | self.spec.to_env(self.platform)
        with self.log_path.open("ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(self.argv)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(  # argv list, never a shell string
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent,  # noqa: PLW1509 - only calls prctl
            )
        self.state = EngineState.STARTING

    def exited(self) -> bool:
        return self.process is not None and self.process.poll() is not None

    def healthy(self, client: httpx.Client) -> bool:
        try:
            return client.get(f"{self.spec.url}/health").status_code == 200
        except httpx.HTTPError:
            return False

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, *, grace_s: float = 20) -> None:
        """Terminate the whole process group; kill it if it has not exited after `grace_s`."""
        process = self.process
        if process is None:
            return
        if process.poll() is None:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                process.wait(timeout=10)
        # vLLM's engine-core child can outlive the API server; reap the group either way.
        _signal_group(process.pid, signal.SIGKILL)
        self.state = EngineState.STOPPED

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "url": self.spec.url,
            "pid": self.pid,
            "restarts": self.restarts,
            "log": str(self.log_path),
        }


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


class EngineSupervisor:
    """Owns the local engines of a deployment."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        log_dir: Path,
        python: str = sys.executable,
        progress: Callable[[str], None] = print,
    ) -> None:
        self.engines = [
            EngineProcess(m.name, m.engine, config.platform, log_dir / f"{m.name}.log", python)
            for m in config.models
            if m.engine is not None
        ]
        self._progress = progress
        self._lock = threading.Lock()

    def start_all(self) -> None:
        """Start every engine at once and wait until all are ready; on failure stop them all."""
        try:
            for engine in self.engines:
                self._progress(f"starting engine {engine.name} on {engine.spec.url} (log: {engine.log_path})")
                engine.start()
            self._wait_ready(self.engines)
        except BaseException:
            self.stop_all()
            raise

    def _wait_ready(self, engines: list[EngineProcess]) -> None:
        started = time.monotonic()
        last_report = started
        pending = list(engines)
        with httpx.Client(timeout=2) as client:
            while pending:
                for engine in list(pending):
                    if engine.exited():
                        engine.state = EngineState.FAILED
                        code = engine.process.returncode if engine.process else None
                        raise EngineStartupError(
                            f"engine {engine.name} exited with code {code} while starting; "
                            f"last lines of {engine.log_path}:\n{engine.log_tail()}"
                        )
                    if time.monotonic() - started > engine.spec.startup_timeout_s:
                        engine.state = EngineState.FAILED
                        raise EngineStartupError(
                            f"engine {engine.name} not ready after {engine.spec.startup_timeout_s:.0f} s; "
                            f"last lines of {engine.log_path}:\n{engine.log_tail()}"
                        )
                    if engine.healthy(client):
                        engine.state = EngineState.READY
                        pending.remove(engine)
                        self._progress(f"engine {engine.name} ready after {time.monotonic() - started:.0f} s")
                if pending and time.monotonic() - last_report > 15:
                    last_report = time.monotonic()
                    names = ", ".join(e.name for e in pending)
                    self._progress(f"waiting for {names} ({time.monotonic() - started:.0f} s)")
                time.sleep(0.5)

    def poll(self) -> None:
        """Notice engines that died after becoming ready."""
        for engine in self.engines:
            if engine.state in (EngineState.READY, EngineState.STARTING) and engine.exited():
                engine.state = EngineState.FAILED

    def tend(self, *, max_backoff_s: float = 30) -> None:
        """Restart engines that died, after 1, 2, 4 ... max_backoff_s seconds.

        Called periodically from the gateway's event loop, which runs in the main thread
        (PDEATHSIG follows the thread that forked). Deliberately stopped engines stay stopped.
        """
        now = time.monotonic()
        for engine in self.engines:
            if engine.state is EngineState.STOPPED or not engine.exited():
                continue
            if engine.restart_at is None:
                engine.state = EngineState.FAILED
                engine.failures_in_a_row += 1
                delay = min(max_backoff_s, 2.0 ** (engine.failures_in_a_row - 1))
                engine.restart_at = now + delay
                code = engine.process.returncode if engine.process else None
                self._progress(f"engine {engine.name} exited with code {code}; restarting in {delay:.0f} s")
            elif now >= engine.restart_at:
                engine.restart_at = None
                engine.restarts += 1
                self._progress(f"restarting engine {engine.name} (restart {engine.restarts})")
                engine.start()

    def mark_healthy(self, name: str, url: str) -> None:
        """A starting engine answered /health: it is ready and its backoff resets."""
        engine = self.find(name)
        if engine is not None and engine.spec.url == url and engine.state is EngineState.STARTING:
            engine.state = EngineState.READY
            engine.failures_in_a_row = 0
            self._progress(f"engine {engine.name} is ready again")

    def stop_all(self) -> None:
        with self._lock:
            for engine in self.engines:
                engine.state = EngineState.STOPPED  # nothing restarts an engine being stopped
            for engine in self.engines:
                if engine.process is not None and engine.process.poll() is None:
                    _signal_group(engine.process.pid, signal.SIGTERM)
            for engine in self.engines:
                engine.stop()

    def find(self, name: str) -> EngineProcess | None:
        return next((e for e in self.engines if e.name == name), None)
