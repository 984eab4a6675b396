"""Start, watch, restart and stop local vLLM engines.

    supervisor = EngineSupervisor(config, log_dir=Path("logs"))
    supervisor.start_all()          # in waves (gateway/launch_plan.py); blocks until all answer /health
    supervisor.start_tending()      # a thread: restarts engines that die or hang, with backoff and a cap
    ...
    supervisor.stop_all()           # SIGTERM every process group, wait, then SIGKILL; hurry() cuts the wait

Each engine is a `gateway.process.Child`: an argv list in its own process group with a death
signal, its output in a size-capped rotating log. Readiness is `GET /health` against the
engine's startup deadline; an engine that exits while starting fails fast with its log tail.

Tending (one long-lived thread, so the death signal of the engines it restarts stays armed,
and nothing blocks the gateway's event loop):
- an engine whose process exited, that missed its startup deadline, or that was ready but has
  failed every health check for `unhealthy_restart_after_s` (hung: SIGSTOP, a wedged GPU) has
  its group killed and is restarted after 1, 2, 4 ... `max_restart_backoff_s` seconds;
- a restarted engine gets its startup deadline again, and does not start while another engine
  on one of its GPUs is starting (the same rule as the waves);
- after `max_restarts` restarts within `restart_window_s` it is marked failed and left alone.
"""

from __future__ import annotations

import collections
import enum
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from gateway.config import DeploymentConfig, EngineSpec, GatewaySpec, Platform
from gateway.errors import EngineStartupError
from gateway.kv_check import KvReport, check_kv_cache, device_memory_bytes
from gateway.launch_plan import engine_waves, shares_device
from gateway.process import Child, launch
from gateway.rotating_log import RotatingLog

logger = logging.getLogger("gateway.supervisor")
STOP_MARGIN_S = 20  # beyond the engine's own --shutdown-timeout before SIGKILL


# The gateway's own settings (API keys, the votes database URL with its password) stay out of the
# engines' environment: vLLM has no use for them, and an engine's environment is readable by
# whatever runs as its user (/proc/<pid>/environ) and dumped by some crash reporters.
GATEWAY_ENV_PREFIX = "GATEWAY_"


def engine_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """The supervisor's environment minus the gateway's own variables, for an engine process.

    >>> engine_environment({"PATH": "/bin", "GATEWAY_API_KEYS": "sk-1"})
    {'PATH': '/bin'}
    """
    return {k: v for k, v in environ.items() if not k.startswith(GATEWAY_ENV_PREFIX)}


class EngineState(enum.StrEnum):
    STOPPED = "stopped"  # never started, or stopped on purpose
    STARTING = "starting"
    READY = "ready"
    RESTARTING = "restarting"  # waiting out its backoff
    FAILED = "failed"  # gave up: restart cap reached, or restarts disabled


@dataclass(frozen=True)
class RestartPolicy:
    restart: bool = True
    max_backoff_s: float = 30
    unhealthy_restart_after_s: float = 30
    max_restarts: int = 5
    window_s: float = 600

    @classmethod
    def from_spec(cls, spec: GatewaySpec) -> RestartPolicy:
        return cls(
            restart=spec.restart_engines,
            max_backoff_s=spec.max_restart_backoff_s,
            unhealthy_restart_after_s=spec.unhealthy_restart_after_s,
            max_restarts=spec.max_restarts,
            window_s=spec.restart_window_s,
        )


@dataclass
class EngineProcess:
    """One engine: its spec, its process and what we last saw of it."""

    name: str
    spec: EngineSpec
    platform: Platform
    log: RotatingLog
    python: str = sys.executable
    state: EngineState = EngineState.STOPPED
    restarts: int = 0
    reason: str | None = None  # why it last failed
    kv: KvReport | None = None
    failures_in_a_row: int = 0
    restart_at: float | None = None
    started_at: float = 0.0
    unhealthy_since: float | None = None
    restart_times: collections.deque[float] = field(default_factory=collections.deque)
    child: Child | None = field(default=None, repr=False)

    @property
    def log_path(self) -> Path:
        return self.log.path

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.child else None

    @property
    def argv(self) -> list[str]:
        return self.spec.to_argv(self.name, python=self.python)

    def launch(self) -> None:
        """Start the process (from a thread that outlives it: see gateway/process.py)."""
        if self.child is not None:  # a restart: reap what is left of the previous run's group
            self.child.stop(grace_s=0)
        self.log.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(self.argv)}\n".encode())
        self.child = launch(
            self.argv, log=self.log, env=engine_environment(os.environ) | self.spec.to_env(self.platform)
        )
        self.state = EngineState.STARTING
        self.started_at = time.monotonic()
        self.unhealthy_since = None
        self.kv = None

    def exited(self) -> bool:
        return self.child is not None and self.child.exited()

    @property
    def returncode(self) -> int | None:
        return self.child.returncode if self.child else None

    def healthy(self, client: httpx.Client) -> bool:
        return self.child is not None and self.child.answers(f"{self.spec.url}/health", client=client)

    def log_since_start(self) -> str:
        return self.log.text().rsplit("\n=== ", 1)[-1]

    def log_tail(self, lines: int = 40) -> str:
        text = self.log.text()
        return "\n".join(text.splitlines()[-lines:]) if text else "(no log)"

    def stop(self, *, grace_s: float | None = None, hurry: threading.Event | None = None) -> None:
        """Terminate the whole process group; kill it if it has not exited after `grace_s`
        (default: the engine's own --shutdown-timeout plus a margin)."""
        if self.child is not None:
            grace = self.spec.shutdown_timeout_s + STOP_MARGIN_S if grace_s is None else grace_s
            self.child.stop(grace_s=grace, hurry=hurry)
        self.state = EngineState.STOPPED

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "state": self.state.value,
            "url": self.spec.url,
            "pid": self.pid,
            "restarts": self.restarts,
            "reason": self.reason,
            "kv_cache_tokens": self.kv.logged_tokens if self.kv else None,
            "kv_cache_tokens_planned": self.kv.predicted_tokens if self.kv else None,
            "log": str(self.log_path),
        }


class EngineSupervisor:
    """Owns the local engines of a deployment."""

    def __init__(
        self,
        config: DeploymentConfig,
        *,
        log_dir: Path,
        python: str = sys.executable,
        progress: Callable[[str], None] = print,
        policy: RestartPolicy | None = None,
    ) -> None:
        spec = config.gateway
        self.platform = config.platform
        self.policy = policy or RestartPolicy.from_spec(spec)
        by_name: dict[str, EngineProcess] = {}
        self.waves: list[list[EngineProcess]] = []
        for wave in engine_waves(config):
            self.waves.append([])
            for model in wave:
                assert model.engine is not None
                log = RotatingLog(
                    log_dir / f"{model.name}.log", max_bytes=spec.engine_log_max_bytes, backups=spec.engine_log_backups
                )
                engine = EngineProcess(model.name, model.engine, config.platform, log, python)
                by_name[model.name] = engine
                self.waves[-1].append(engine)
        # Config order, as the deployment lists them.
        self.engines = [by_name[m.name] for m in config.models if m.name in by_name]
        self._progress = progress
        self._stop = threading.Event()
        self._hurry = threading.Event()
        self._thread: threading.Thread | None = None

    # --- startup -------------------------------------------------------------------------

    def start_all(self) -> None:
        """Start the engines wave by wave, each wave once the previous one answers /health; on
        any failure stop them all and raise EngineStartupError."""
        try:
            for i, wave in enumerate(self.waves):
                for engine in wave:
                    self._progress(
                        f"starting engine {engine.name} on {engine.spec.url} "
                        f"({engine.spec.device_label(self.platform)}, wave {i + 1} of {len(self.waves)}, "
                        f"log: {engine.log_path})"
                    )
                    engine.launch()
                self._wait_ready(wave)
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
                        raise EngineStartupError(
                            f"engine {engine.name} exited with code {engine.returncode} while starting; "
                            f"last lines of {engine.log_path}:\n{engine.log_tail()}"
                        )
                    if time.monotonic() - started > engine.spec.startup_timeout_s:
                        engine.state = EngineState.FAILED
                        raise EngineStartupError(
                            f"engine {engine.name} not ready after {engine.spec.startup_timeout_s:.0f} s; "
                            f"last lines of {engine.log_path}:\n{engine.log_tail()}"
                        )
                    if engine.healthy(client):
                        pending.remove(engine)
                        self._ready(engine, f"ready after {time.monotonic() - started:.0f} s")
                if pending and time.monotonic() - last_report > 15:
                    last_report = time.monotonic()
                    names = ", ".join(e.name for e in pending)
                    self._progress(f"waiting for {names} ({time.monotonic() - started:.0f} s)")
                time.sleep(0.5)

    def _ready(self, engine: EngineProcess, how: str) -> None:
        engine.state = EngineState.READY
        engine.unhealthy_since = None
        self._progress(f"engine {engine.name} {how}")
        memory = device_memory_bytes(engine.spec.devices[0]) if self.platform == "gpu" else None
        engine.kv = check_kv_cache(
            engine.name, engine.spec, self.platform, engine.log_since_start(), gpu_memory_bytes=memory
        )
        if engine.kv is None:
            self._progress(f"engine {engine.name}: KV cache size not compared with the plan (not logged or not known)")
        elif engine.kv.short:
            self._progress("WARNING: " + engine.kv.message(engine.name))
        else:
            self._progress(engine.kv.message(engine.name))

    # --- tending ---------------------------------------------------------------------------

    def start_tending(self, *, interval_s: float = 2.0) -> None:
        """Watch and restart engines from a background thread until stop_all()."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._tend_forever, args=(interval_s,), name="engine-tender")
        self._thread.daemon = True
        self._thread.start()

    def _tend_forever(self, interval_s: float) -> None:
        with httpx.Client(timeout=2) as client:
            while not self._stop.wait(interval_s):
                try:
                    self.tend_once(lambda engine: engine.healthy(client))
                except Exception:  # a bug here must not end all future restarts: log and go on
                    logger.exception("engine tending failed; trying again in %.0f s", interval_s)

    def tend_once(self, probe: Callable[[EngineProcess], bool], now: float | None = None) -> None:
        """One look at every engine: notice deaths, missed deadlines and hangs; restart when due.
        Deaths are seen first for all of them, so a dead engine is not left "ready" while the
        others' probes (up to their timeout each) run."""
        for engine in self.engines:
            if not self._stop.is_set() and engine.state in (EngineState.READY, EngineState.STARTING):
                self._note_exit(engine, time.monotonic() if now is None else now)
        for engine in self.engines:
            if self._stop.is_set():
                return
            current = time.monotonic() if now is None else now
            if engine.state in (EngineState.STOPPED, EngineState.FAILED):
                continue
            if engine.state is EngineState.RESTARTING:
                if current >= (engine.restart_at or 0) and not self._device_busy(engine):
                    self._restart(engine)
                continue
            if self._note_exit(engine, current):  # died while the engines before it were probed
                continue
            healthy = probe(engine)
            if engine.state is EngineState.STARTING:
                if healthy:
                    engine.failures_in_a_row = 0
                    self._ready(engine, f"is ready again (restart {engine.restarts})")
                elif current - engine.started_at > engine.spec.startup_timeout_s:
                    self._failed(engine, f"not ready after {engine.spec.startup_timeout_s:.0f} s", current)
            elif healthy:
                engine.unhealthy_since = None
            elif engine.unhealthy_since is None:
                engine.unhealthy_since = current
                self._progress(f"engine {engine.name} failed a health check")
            elif current - engine.unhealthy_since >= self.policy.unhealthy_restart_after_s:
                hung = current - engine.unhealthy_since
                self._failed(engine, f"alive but failing health checks for {hung:.0f} s (hung)", current)

    def _note_exit(self, engine: EngineProcess, now: float) -> bool:
        """If its process has exited: fail it (a restart is scheduled) and say True."""
        if not engine.exited():
            return False
        self._failed(engine, f"exited with code {engine.returncode}", now)
        return True

    def _device_busy(self, engine: EngineProcess) -> bool:
        """Another engine on one of its GPUs is starting (restarts follow the waves' rule)."""
        return any(
            other is not engine
            and other.state is EngineState.STARTING
            and shares_device(engine.spec, other.spec, self.platform)
            for other in self.engines
        )

    def _failed(self, engine: EngineProcess, reason: str, now: float) -> None:
        if engine.child is not None:
            engine.child.stop(grace_s=0)  # SIGKILL the group: it is dead, late or hung
        engine.reason = reason
        while engine.restart_times and now - engine.restart_times[0] > self.policy.window_s:
            engine.restart_times.popleft()
        if not self.policy.restart:
            engine.state = EngineState.FAILED
            self._progress(f"ERROR: engine {engine.name} {reason}; restarts are off")
            return
        if len(engine.restart_times) >= self.policy.max_restarts:
            engine.state = EngineState.FAILED
            engine.reason = (
                f"{reason}; {len(engine.restart_times)} restarts within {self.policy.window_s:.0f} s: "
                "marked failed, not restarting"
            )
            self._progress(f"ERROR: engine {engine.name} {engine.reason}")
            return
        engine.failures_in_a_row += 1
        delay = min(self.policy.max_backoff_s, 2.0 ** (engine.failures_in_a_row - 1))
        engine.restart_at = now + delay
        engine.state = EngineState.RESTARTING
        self._progress(f"engine {engine.name} {reason}; restarting in {delay:.0f} s")

    def _restart(self, engine: EngineProcess) -> None:
        engine.restart_at = None
        engine.restarts += 1
        engine.restart_times.append(time.monotonic())
        self._progress(f"restarting engine {engine.name} (restart {engine.restarts})")
        engine.launch()

    # --- stopping --------------------------------------------------------------------------

    def hurry(self) -> None:
        """Make a stop_all in progress kill what is left now (a second Ctrl-C)."""
        self._hurry.set()

    def stop_all(self, *, grace_s: float | None = None) -> None:
        """Stop tending, SIGTERM every engine's group at once (each drains for its
        --shutdown-timeout), then wait for each and SIGKILL what is left."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=30)
        for engine in self.engines:
            engine.state = EngineState.STOPPED  # nothing restarts an engine being stopped
            if engine.child is not None and not engine.child.exited():
                engine.child.signal_group(signal.SIGTERM)
        for engine in self.engines:
            engine.stop(grace_s=grace_s, hurry=self._hurry)
        for engine in self.engines:
            engine.log.close()

    def find(self, name: str) -> EngineProcess | None:
        return next((e for e in self.engines if e.name == name), None)
