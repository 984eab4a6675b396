"""EngineSupervisor against a FAKE engine module (tests/fake_vllm), so process handling is
tested in seconds; tests/test_server.py and tests/test_hardening.py cover the same paths with
real vLLM engines."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi.testclient import TestClient

from gateway.app import create_app
from gateway.config import DeploymentConfig, EngineSpec, GatewaySpec, ModelSpec
from gateway.errors import EngineStartupError
from gateway.kv_check import KvReport
from gateway.supervisor import EngineProcess, EngineState, EngineSupervisor
from tests.conftest import ROOT, TINY_CONFIG, suite_port

FAKE = Path(__file__).parent / "fake_vllm"


def fake_config(
    *offsets: int,
    mode: str = "serve",
    timeout: float = 20,
    platform: str = "cpu",
    devices: list[list[int]] | None = None,
    gateway: dict[str, Any] | None = None,
    engine: dict[str, Any] | None = None,
    env: dict[str, str] | None = None,
) -> DeploymentConfig:
    """Fake engines on suite ports (TEST_PORT_BASE + offset), built in memory."""
    base_env = {"PYTHONPATH": str(FAKE), "FAKE_ENGINE_MODE": mode} | (env or {})
    models = []
    for i, offset in enumerate(offsets):
        port = suite_port(offset)
        spec: dict[str, Any] = {
            "model": "/nonexistent",
            "max_model_len": 128,
            "port": port,
            "env": base_env,
            "startup_timeout_s": timeout,
            "shutdown_timeout_s": 1,
        }
        if platform == "gpu":
            spec |= {"gpu_memory_utilization": 0.3, "devices": (devices or [[0]] * len(offsets))[i]}
        models.append(ModelSpec(name=f"fake-{port}", engine=EngineSpec.model_validate(spec | (engine or {}))))
    return DeploymentConfig(platform=platform, gateway=GatewaySpec(**(gateway or {})), models=models)  # type: ignore[arg-type]


def child_pids(log: Path) -> list[int]:
    return [int(pid) for pid in re.findall(r"child pid=(\d+)", log.read_text())]


def quiet(_: str) -> None:
    pass


def answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(check: Callable[[], bool], timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if check():
            return True
        time.sleep(0.1)
    return False


def test_starts_all_reports_ready_and_stops_whole_process_groups(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(200, 201), log_dir=tmp_path, progress=quiet)
    supervisor.start_all()
    try:
        assert [e.state for e in supervisor.engines] == [EngineState.READY, EngineState.READY]
        assert len(supervisor.waves) == 1  # CPU engines start together
        pids = [e.pid for e in supervisor.engines]
        children = [pid for e in supervisor.engines for pid in child_pids(e.log_path)]
        assert len(children) == 2
        assert all(pid is not None and psutil.pid_exists(pid) for pid in pids + children)
        assert f"--served-model-name fake-{suite_port(200)}" in supervisor.engines[0].log_path.read_text()
    finally:
        supervisor.stop_all()

    def gone(pid: int) -> bool:
        try:
            return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return True

    # The engine's own children go with it (process group); on a loaded machine SIGKILL takes a moment to land.
    assert wait_until(lambda: all(gone(pid) for pid in children), timeout=10)
    assert all(e.state is EngineState.STOPPED and e.exited() for e in supervisor.engines)


def test_engines_do_not_inherit_the_gateways_secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_API_KEYS", "sk-secret-key")
    monkeypatch.setenv("GATEWAY_VOTES_DB", "postgresql://votes:hunter2@db/votes")
    monkeypatch.setenv("R1Q_TEST_MARKER", "kept")
    supervisor = EngineSupervisor(fake_config(203), log_dir=tmp_path, progress=quiet)
    supervisor.start_all()
    try:
        pid = supervisor.engines[0].pid
        assert pid is not None
        environ = psutil.Process(pid).environ()
        assert environ.get("R1Q_TEST_MARKER") == "kept" and environ["FAKE_ENGINE_MODE"] == "serve"
        assert not [name for name in environ if name.startswith("GATEWAY_")]
    finally:
        supervisor.stop_all()


def test_engines_die_with_the_supervisor_killed_outright(tmp_path: Path) -> None:
    """SIGKILL leaves no chance to clean up: the death signal on the engine's argv
    (setpriv --pdeathsig) must take the engine down with its supervising process."""
    script = (
        "import sys, time\n"
        "from pathlib import Path\n"
        "from gateway.supervisor import EngineSupervisor\n"
        "from tests.test_supervisor import fake_config\n"
        "s = EngineSupervisor(fake_config(202), log_dir=Path(sys.argv[1]), progress=print)\n"
        "s.start_all()\n"
        "print('engine pid', s.engines[0].pid, flush=True)\n"
        "time.sleep(120)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        line = next(line for line in parent.stdout if line.startswith("engine pid"))
        engine_pid = int(line.split()[-1])
        assert psutil.pid_exists(engine_pid)
    finally:
        parent.kill()
        parent.wait()
    gone = wait_until(lambda: not psutil.pid_exists(engine_pid) or psutil.Process(engine_pid).status() == "zombie", 10)
    # The fake engine dies of the SIGTERM without stopping its own child (vLLM shuts its engine
    # core down on SIGTERM); what is left of its group is this test's to clean up.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(engine_pid, signal.SIGKILL)
    assert gone, "the engine outlived its supervisor"


def test_engines_sharing_a_gpu_start_one_after_another(tmp_path: Path) -> None:
    said: list[str] = []
    config = fake_config(203, 204, 205, platform="gpu", devices=[[0], [0], [1]])
    supervisor = EngineSupervisor(config, log_dir=tmp_path, progress=said.append)
    a, b, c = (f"fake-{suite_port(o)}" for o in (203, 204, 205))
    assert [[e.name for e in wave] for wave in supervisor.waves] == [[a, c], [b]]
    supervisor.start_all()
    try:

        def index(prefix: str) -> int:
            return next(i for i, line in enumerate(said) if line.startswith(prefix))

        assert index(f"starting engine {b}") > index(f"engine {a} ready")  # same GPU: after a answered
        assert index(f"starting engine {c}") < index(f"engine {a} ready")  # other GPU: together with a
        assert all(e.state is EngineState.READY for e in supervisor.engines)
    finally:
        supervisor.stop_all()


def test_engine_dying_at_startup_fails_fast_with_log_tail(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(206, mode="crash"), log_dir=tmp_path, progress=quiet)
    with pytest.raises(EngineStartupError) as info:
        supervisor.start_all()
    message = str(info.value)
    assert f"fake-{suite_port(206)} exited with code 3" in message
    assert "ValueError: fake engine cannot load model" in message
    assert supervisor.engines[0].state is EngineState.STOPPED


def test_engine_missing_its_deadline_is_stopped(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(207, mode="hang", timeout=3), log_dir=tmp_path, progress=quiet)
    with pytest.raises(EngineStartupError, match="not ready after 3 s"):
        supervisor.start_all()
    assert supervisor.engines[0].exited()


def test_engine_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(208, mode="stubborn"), log_dir=tmp_path, progress=quiet)
    supervisor.start_all()
    engine = supervisor.engines[0]
    engine.stop(grace_s=1)
    assert engine.exited() and engine.returncode == -9


def test_hung_engine_is_killed_restarted_and_serves_again(tmp_path: Path) -> None:
    said: list[str] = []
    config = fake_config(209, gateway={"unhealthy_restart_after_s": 1, "max_restart_backoff_s": 0.2})
    supervisor = EngineSupervisor(config, log_dir=tmp_path, progress=said.append)
    supervisor.start_all()
    supervisor.start_tending(interval_s=0.2)
    try:
        engine = supervisor.engines[0]
        hung_pid = engine.pid
        assert hung_pid is not None
        os.killpg(hung_pid, signal.SIGSTOP)  # alive, answering nothing
        assert wait_until(lambda: engine.restarts == 1 and engine.state is EngineState.READY, timeout=20), said
        assert engine.pid != hung_pid
        assert not psutil.pid_exists(hung_pid) or psutil.Process(hung_pid).status() == psutil.STATUS_ZOMBIE
        assert any("failing health checks" in line and "(hung)" in line for line in said)
        assert engine.reason is not None and "hung" in engine.reason
    finally:
        supervisor.stop_all()


def test_restart_cap_marks_the_engine_failed(tmp_path: Path) -> None:
    said: list[str] = []
    config = fake_config(210, gateway={"max_restarts": 2, "restart_window_s": 60, "max_restart_backoff_s": 0.1})
    supervisor = EngineSupervisor(config, log_dir=tmp_path, progress=said.append)
    supervisor.start_all()
    supervisor.start_tending(interval_s=0.1)
    engine = supervisor.engines[0]
    try:
        for restart in (1, 2):
            assert engine.child is not None
            engine.child.signal_group(signal.SIGKILL)
            assert wait_until(lambda r=restart: engine.restarts == r and engine.state is EngineState.READY, 20), said
        assert engine.child is not None
        engine.child.signal_group(signal.SIGKILL)  # the third death within the window
        assert wait_until(lambda: engine.state is EngineState.FAILED, timeout=10), said
        time.sleep(0.5)
        assert engine.restarts == 2 and engine.state is EngineState.FAILED  # and it stays down
        assert engine.reason is not None and "2 restarts within 60 s" in engine.reason
        assert any(line.startswith("ERROR: engine") and "marked failed" in line for line in said)
        assert engine.describe()["state"] == "failed"
    finally:
        supervisor.stop_all()


def test_a_death_is_seen_before_any_probe_runs(tmp_path: Path) -> None:
    """Probes take up to their timeout each; a dead engine must not stay "ready" behind them."""
    supervisor = EngineSupervisor(fake_config(219, 220), log_dir=tmp_path, progress=quiet)
    supervisor.start_all()
    first, second = supervisor.engines
    try:
        assert second.child is not None
        second.child.signal_group(signal.SIGKILL)
        second.child.process.wait()
        states_at_probe: list[EngineState] = []

        def probe(engine: EngineProcess) -> bool:
            states_at_probe.append(second.state)
            return True

        supervisor.tend_once(probe)
        assert states_at_probe == [EngineState.RESTARTING]  # only `first` was probed, after the death was noted
        assert first.state is EngineState.READY and second.reason == "exited with code -9"
    finally:
        supervisor.stop_all()


def test_restarts_on_one_gpu_wait_for_each_other(tmp_path: Path) -> None:
    config = fake_config(211, 212, platform="gpu", gateway={"max_restart_backoff_s": 0.1})
    supervisor = EngineSupervisor(config, log_dir=tmp_path, progress=quiet)
    supervisor.start_all()
    first, second = supervisor.engines
    try:
        for engine in (first, second):
            assert engine.child is not None
            engine.child.signal_group(signal.SIGKILL)
            engine.child.process.wait()
        down: Callable[[EngineProcess], bool] = lambda _: False  # noqa: E731
        supervisor.tend_once(down)  # both noticed dead: waiting out their backoff
        assert [e.state for e in supervisor.engines] == [EngineState.RESTARTING] * 2
        later = time.monotonic() + 5
        supervisor.tend_once(down, now=later)
        assert first.state is EngineState.STARTING  # launched
        assert second.state is EngineState.RESTARTING  # its GPU is busy with the first one starting
        assert wait_until(lambda: answers(first.spec.url), timeout=10)
        supervisor.tend_once(lambda e: e is first, now=later)  # first answers: ready ...
        assert first.state is EngineState.READY and second.state is EngineState.STARTING  # ... then second starts
    finally:
        supervisor.stop_all()


def test_kv_cache_size_is_compared_with_the_plan(tmp_path: Path) -> None:
    model = tmp_path / "tiny"
    model.mkdir()
    (model / "config.json").write_text(json.dumps(TINY_CONFIG))
    engine = {"model": str(model), "max_model_len": 2048, "kv_cache_gib": 1}
    for offset, logged, expected in ((213, 524_288, "as planned"), (214, 400_000, "24% SMALLER than planned")):
        said: list[str] = []
        config = fake_config(offset, engine=engine, env={"FAKE_KV_TOKENS": str(logged)})
        supervisor = EngineSupervisor(config, log_dir=tmp_path / str(offset), progress=said.append)
        supervisor.start_all()
        try:
            line = next(line for line in said if "KV cache" in line)
            assert f"KV cache {logged:,} tokens, planner predicted 524,288: {expected}" in line
            if logged < 524_288:  # on CPU the size is exact: no GPU to blame
                assert "GPU" not in line and "other settings than the config's" in line
            assert line.startswith("WARNING") == (logged < 524_288)
            described = supervisor.engines[0].describe()
            assert (described["kv_cache_tokens"], described["kv_cache_tokens_planned"]) == (logged, 524_288)
        finally:
            supervisor.stop_all()


def test_a_short_cache_is_explained_by_its_platform() -> None:
    gpu, cpu = KvReport(400, 1000, "gpu"), KvReport(400, 1000, "cpu")
    assert gpu.short and "60% SMALLER than planned: was the GPU shared" in gpu.message("m")
    assert cpu.short and "GPU" not in cpu.message("m")
    assert KvReport(1000, 1000, "cpu").message("m").endswith("as planned")


def test_engine_logs_rotate(tmp_path: Path) -> None:
    config = fake_config(215, gateway={"engine_log_max_bytes": 300, "engine_log_backups": 2})
    supervisor = EngineSupervisor(config, log_dir=tmp_path, progress=quiet)
    supervisor.start_all()
    try:
        engine = supervisor.engines[0]
        for _ in range(20):
            engine.log.write(b"x" * 50 + b"\n")
        files = sorted(tmp_path.glob(f"{engine.name}.log*"))
        assert [f.name for f in files] == [f"{engine.name}.log", f"{engine.name}.log.1", f"{engine.name}.log.2"]
        assert all(f.stat().st_size <= 300 for f in files)
    finally:
        supervisor.stop_all()


def test_a_failed_engine_shows_in_engines_and_metrics(tmp_path: Path) -> None:
    config = fake_config(218)
    supervisor = EngineSupervisor(config, log_dir=tmp_path, progress=quiet)  # not started: no process
    engine = supervisor.engines[0]
    engine.state, engine.reason = EngineState.FAILED, "exited with code 1; 5 restarts within 600 s: marked failed"

    def unreachable(request: httpx.Request) -> httpx.Response:  # a FAKE engine that is gone
        raise httpx.ConnectError("connection refused", request=request)

    app = create_app(config, supervisor=supervisor, transport=httpx.MockTransport(unreachable))
    with TestClient(app) as client:
        row = client.get("/engines").json()[0]
        assert row["state"] == "failed" and "marked failed" in row["reason"]
        assert f'gateway_engine_failed{{model="{engine.name}"}} 1.0' in client.get("/metrics").text
        assert client.get("/ready").json() == {"ready": False}
