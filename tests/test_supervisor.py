"""EngineSupervisor against a FAKE engine module (tests/fake_vllm), so process handling is
tested in seconds; tests/test_server.py covers the same paths with real vLLM engines."""

from __future__ import annotations

import re
from pathlib import Path

import psutil
import pytest

from gateway.config import DeploymentConfig, EngineSpec, ModelSpec
from gateway.errors import EngineStartupError
from gateway.supervisor import EngineState, EngineSupervisor

FAKE = Path(__file__).parent / "fake_vllm"


def fake_config(*ports: int, mode: str = "serve", timeout: float = 20) -> DeploymentConfig:
    env = {"PYTHONPATH": str(FAKE), "FAKE_ENGINE_MODE": mode}
    return DeploymentConfig(
        platform="cpu",
        models=[
            ModelSpec(
                name=f"fake-{port}",
                engine=EngineSpec(
                    model="/nonexistent", max_model_len=128, port=port, env=env, startup_timeout_s=timeout
                ),
            )
            for port in ports
        ],
    )


def child_pids(log: Path) -> list[int]:
    return [int(pid) for pid in re.findall(r"child pid=(\d+)", log.read_text())]


def test_starts_all_reports_ready_and_stops_whole_process_groups(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(18701, 18702), log_dir=tmp_path, progress=lambda _: None)
    supervisor.start_all()
    try:
        assert [e.state for e in supervisor.engines] == [EngineState.READY, EngineState.READY]
        pids = [e.pid for e in supervisor.engines]
        children = [pid for e in supervisor.engines for pid in child_pids(e.log_path)]
        assert len(children) == 2
        assert all(pid is not None and psutil.pid_exists(pid) for pid in pids + children)
        assert "--served-model-name fake-18701" in supervisor.engines[0].log_path.read_text()
    finally:
        supervisor.stop_all()
    for pid in children:  # the engine's own children go with it (process group)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert all(e.state is EngineState.STOPPED and e.exited() for e in supervisor.engines)


def test_engine_dying_at_startup_fails_fast_with_log_tail(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(18703, mode="crash"), log_dir=tmp_path, progress=lambda _: None)
    with pytest.raises(EngineStartupError) as info:
        supervisor.start_all()
    message = str(info.value)
    assert "fake-18703 exited with code 3" in message
    assert "ValueError: fake engine cannot load model" in message
    assert supervisor.engines[0].state is EngineState.STOPPED


def test_engine_missing_its_deadline_is_stopped(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(18704, mode="hang", timeout=3), log_dir=tmp_path, progress=lambda _: None)
    with pytest.raises(EngineStartupError, match="not ready after 3 s"):
        supervisor.start_all()
    assert supervisor.engines[0].exited()


def test_engine_ignoring_sigterm_is_killed(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(18705, mode="stubborn"), log_dir=tmp_path, progress=lambda _: None)
    supervisor.start_all()
    engine = supervisor.engines[0]
    engine.stop(grace_s=1)
    assert engine.exited() and engine.process is not None
    assert engine.process.returncode == -9


def test_poll_notices_an_engine_that_died(tmp_path: Path) -> None:
    supervisor = EngineSupervisor(fake_config(18706), log_dir=tmp_path, progress=lambda _: None)
    supervisor.start_all()
    try:
        engine = supervisor.engines[0]
        assert engine.process is not None
        engine.process.kill()
        engine.process.wait()
        supervisor.poll()
        assert engine.state is EngineState.FAILED
        assert supervisor.find("fake-18706") is engine
    finally:
        supervisor.stop_all()
