"""gateway/process.py and gateway/rotating_log.py with real child processes (no engines)."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from gateway.process import ChildExited, ChildTimeout, launch, running
from gateway.rotating_log import RotatingLog
from tests.conftest import suite_port

SERVE = (
    "import http.server, sys; "
    "http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler).serve_forever()"
)


def test_running_waits_for_an_answer_and_stops_the_group(tmp_path: Path) -> None:
    port = suite_port(216)
    argv = [sys.executable, "-c", SERVE, str(port)]
    with running(argv, url=f"http://127.0.0.1:{port}/", deadline_s=20, log=tmp_path / "out.log", cwd=tmp_path) as child:
        assert psutil.Process(child.pid).cmdline()[-1] == str(port)  # setpriv exec'd into the program
        pid = child.pid
    assert child.exited() and (not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE)


def test_wait_fails_fast_when_the_child_exits_and_after_the_deadline(tmp_path: Path) -> None:
    dead = launch([sys.executable, "-c", "raise SystemExit(4)"], log=tmp_path / "a.log")
    with pytest.raises(ChildExited, match="exited with code 4"):
        dead.wait_until_answers(f"http://127.0.0.1:{suite_port(217)}/", deadline_s=20)
    silent = launch([sys.executable, "-c", "import time; time.sleep(60)"], log=tmp_path / "b.log")
    started = time.monotonic()
    with pytest.raises(ChildTimeout):
        silent.wait_until_answers(f"http://127.0.0.1:{suite_port(217)}/", deadline_s=1)
    assert time.monotonic() - started < 5
    stop = threading.Event()
    stop.set()
    with pytest.raises(InterruptedError):
        silent.wait_until_answers(f"http://127.0.0.1:{suite_port(217)}/", deadline_s=30, stop=stop)
    assert silent.stop(grace_s=5) is not None and silent.exited()


def test_stop_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(60)"
    )
    child = launch([sys.executable, "-c", stubborn], log=tmp_path / "c.log")
    end = time.monotonic() + 10
    while "up" not in (tmp_path / "c.log").read_text() and time.monotonic() < end:
        time.sleep(0.05)
    assert child.stop(grace_s=0.5) == -9


def test_cores_pin_the_child(tmp_path: Path) -> None:
    core = sorted(psutil.Process().cpu_affinity() or [0])[-1]
    child = launch([sys.executable, "-c", "import time; time.sleep(30)"], cores=[core], log=tmp_path / "d.log")
    try:
        time.sleep(0.3)
        assert psutil.Process(child.pid).cpu_affinity() == [core]
    finally:
        child.stop(grace_s=2)


def test_a_chatty_child_fills_only_the_rotating_files(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "engine.log", max_bytes=4096, backups=2)
    child = launch([sys.executable, "-c", "for i in range(20000): print(f'line {i}')"], log=log)
    child.process.wait(timeout=30)
    child.stop(grace_s=1)  # joins the thread that copies its output
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["engine.log", "engine.log.1", "engine.log.2"]
    assert all((tmp_path / n).stat().st_size <= 4096 for n in names)
    lines = log.text().splitlines()
    assert lines[-1] == "line 19999"  # the newest output is kept, whole lines, in order
    numbers = [int(line.split()[1]) for line in lines]
    assert numbers == list(range(numbers[0], 20000))


def test_rotating_log_cuts_at_line_ends_and_splits_only_oversized_lines(tmp_path: Path) -> None:
    log = RotatingLog(tmp_path / "x.log", max_bytes=10, backups=1)
    log.write(b"aaaa\nbbbb\ncc")  # 12 bytes: "aaaa\nbbbb\n" fits, "cc" goes to a new file
    assert (tmp_path / "x.log.1").read_bytes() == b"aaaa\nbbbb\n"
    assert (tmp_path / "x.log").read_bytes() == b"cc"
    log.write(b"0123456789012345\n")  # longer than a file: split, never lost
    assert log.text().endswith("0123456789012345\n")
    assert len(log.files()) == 2
    with pytest.raises(ValueError):
        RotatingLog(tmp_path / "y.log", max_bytes=0, backups=1)
