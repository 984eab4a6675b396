"""Run model-written code in a confined process and judge it from outside.

    sandbox = Sandbox(SandboxLimits(timeout_s=10))    # SandboxUnavailable where namespaces are not
    task = CodeTask(program, entry_point="add", test="def check(candidate):\\n    assert candidate(1, 2) == 3\\n")
    result = sandbox.check(task)                      # blocking; call it from a thread in async code
    result.passed, result.status, result.detail

The verdict (sandbox_checker.py): the sandbox process runs only the model's program and answers
calls to its function; the test's check() runs here, in the parent, and calls that function
through a pipe, receiving plain data (sandbox_codec.py). Nothing the model's code does inside
the sandbox (print, exit codes, patched builtins, reading this process's state) decides a pass:
only answers that satisfy the test's own assertions do.

Isolation (`describe()` lists what is in force; results record it):

- "namespaces" (root with util-linux `unshare`, as on these machines and in CI): network, pid,
  mount, IPC, UTS and cgroup namespaces; a /proc of its own pid namespace and an empty /sys;
  every mount read-only except a size-capped tmpfs holding the work directory; an unprivileged
  uid of its own (one per concurrent run) with no groups or capabilities.
- "unsafe" (anything else): refused unless the caller passes `allow_unsafe=True`
  (`scripts/eval.py --confirm-run-unsafe-code`, `make eval UNSAFE_CODE=1`). Same user as the
  eval, the host's /proc, the work directory is a temporary directory on the host.
- Both (sandbox_confine.py): a seccomp filter that allows no new process (threads only), no
  socket, no access to other processes and no mounts; Landlock where the kernel has it, so
  files can be written only in the work directory and processes outside cannot be traced or
  signalled; rlimits on address space (the whole sandbox, since it is one process), CPU time,
  threads, file size and open files; a new session killed with SIGKILL at the end (after a
  wall-clock timeout at the latest).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
import queue
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from evaluation.sandbox_checker import Channel, CodeTask, SandboxError, run_check
from evaluation.sandbox_confine import landlock_abi, seccomp_supported

__all__ = ["CodeTask", "Sandbox", "SandboxError", "SandboxLimits", "SandboxResult", "SandboxUnavailable"]

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent  # the sandbox's interpreter imports the harness from here
FIRST_SANDBOX_UID = 64000  # unassigned uids are taken from here up, one per concurrent run
UNSHARE = ["unshare", "--net", "--pid", "--mount", "--ipc", "--uts", "--cgroup", "--fork", "--kill-child=SIGKILL"]
SETUP_TIMEOUT_S = 60.0  # to start and confine itself, before the program's own timeout begins
UNSAFE_OPT_IN = "scripts/eval.py --confirm-run-unsafe-code (make eval UNSAFE_CODE=1; Sandbox(allow_unsafe=True))"
BOOTSTRAP = (
    "import json, sys; config = json.loads(sys.argv[1]); sys.path.insert(0, config['root']); "
    "from evaluation.sandbox_harness import main; main(config)"
)


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock for loading the program and every call of the test
    memory_bytes: int = 1 << 30  # RLIMIT_AS of the sandbox's one process
    work_bytes: int = 64 << 20  # the work directory's tmpfs (namespaces mode)
    max_processes: int = 16  # RLIMIT_NPROC (per sandbox uid): threads, since no process can start
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE: output and any file written
    max_open_files: int = 64
    answer_bytes: int = 1 << 20  # one encoded return value (the parent decodes it)
    output_chars: int = 2000  # tail of stdout+stderr kept in the result


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout | killed by SIGXCPU (or another signal)
    exit_code: int | None  # the sandbox process's own, when it ended before the verdict
    duration_s: float
    output: str  # tail of the program's stdout and stderr, then the reason it failed

    @property
    def detail(self) -> str:
        last = next((line for line in reversed(self.output.splitlines()) if line.strip()), "")
        return self.status if self.passed or not last else f"{self.status}: {last[:200]}"


class SandboxUnavailable(SandboxError):
    """No namespace isolation here, and the caller did not opt in to running code without it."""


class Sandbox:
    def __init__(self, limits: SandboxLimits | None = None, *, parallel: int = 2, allow_unsafe: bool = False) -> None:
        if not shutil.which("prlimit"):
            raise SandboxError("the sandbox needs util-linux's `prlimit` (apt-get install util-linux)")
        self.limits = limits or SandboxLimits()
        self.landlock_abi = landlock_abi()
        self.seccomp = seccomp_supported()
        self.python = sandbox_python()
        self.isolation = "namespaces"
        uids: list[int | None] = list(free_uids(parallel))
        self.unsafe_reason = self._namespace_problem(uids[0])
        if self.unsafe_reason is not None:
            if not allow_unsafe:
                raise SandboxUnavailable(
                    f"no namespace isolation for model-written code here: {self.unsafe_reason}. Without it "
                    "the code runs as this user and sees this machine's processes. To run it anyway, "
                    f"opt in: {UNSAFE_OPT_IN}"
                )
            self.isolation = "unsafe"
            uids = [None] * parallel
            log.warning("running model-written code WITHOUT namespace isolation: %s", self.unsafe_reason)
        self._uids: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        for uid in uids:
            self._uids.put(uid)

    def describe(self) -> dict[str, object]:
        """What protected the runs, for the results file."""
        layers = ["verdict: check() runs outside the sandbox; only plain data crosses"]
        if self.isolation == "namespaces":
            layers += [
                "namespaces: net, pid, mount, ipc, uts, cgroup",
                "private /proc, empty /sys",
                f"read-only filesystem except a {self.limits.work_bytes >> 20} MiB work tmpfs",
                f"unprivileged uid {FIRST_SANDBOX_UID}+",
            ]
        if self.seccomp:
            layers.append("seccomp: no new processes, sockets, ptrace, signals, mounts")
        if self.landlock_abi:
            layers.append(f"landlock ABI {self.landlock_abi}: writes only in the work directory")
        layers.append("rlimits: address space, CPU, threads, file size, open files")
        return {
            "isolation": self.isolation,
            "unsafe_reason": self.unsafe_reason,
            "layers": layers,
            "python": self.python,
            "timeout_s": self.limits.timeout_s,
            "memory_bytes": self.limits.memory_bytes,
            "work_bytes": self.limits.work_bytes,
            "max_processes": self.limits.max_processes,
            "network": "none (network namespace, seccomp)" if self.isolation == "namespaces" else "none (seccomp)",
        }

    def check(self, task: CodeTask) -> SandboxResult:
        uid = self._uids.get()
        try:
            return self._check_as(uid, task)
        finally:
            self._uids.put(uid)

    def _namespace_problem(self, uid: int | None) -> str | None:
        """Why the namespaces mode cannot run here (None: it can), found by trying it."""
        if not self.seccomp:
            return f"no seccomp syscall table for this machine's architecture ({os.uname().machine})"
        if os.geteuid() != 0:
            return "not running as root (namespaces and the drop to a sandbox uid need it)"
        if not shutil.which("unshare"):
            return "util-linux `unshare` is not installed"
        probe = CodeTask(
            "def probe():\n    return 1\n", "probe", "def check(candidate):\n    assert candidate() == 1\n"
        )
        try:
            result = self._check_as(uid, probe)
        except SandboxError as exc:
            return str(exc)
        return None if result.passed else f"a trivial program failed in it ({result.detail})"

    def _check_as(self, uid: int | None, task: CodeTask) -> SandboxResult:
        start = time.monotonic()
        with contextlib.ExitStack() as stack:
            workdir = None
            if uid is None:
                workdir = tempfile.mkdtemp(prefix="eval-sandbox-")
                stack.callback(shutil.rmtree, workdir, ignore_errors=True)
            output = stack.enter_context(tempfile.TemporaryFile())
            requests_r, requests_w = os.pipe()
            answers_r, answers_w = os.pipe()
            stack.callback(os.close, requests_w)
            stack.callback(os.close, answers_r)
            home = workdir or "/tmp/work"
            try:
                process = subprocess.Popen(
                    self._argv(uid, workdir, requests_r, answers_w),
                    cwd=workdir or "/",
                    stdin=subprocess.DEVNULL,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    pass_fds=(requests_r, answers_w),
                    env={"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"},
                    start_new_session=True,
                )
            finally:
                os.close(requests_r)
                os.close(answers_w)
            channel = Channel(requests_w, answers_r, time.monotonic() + SETUP_TIMEOUT_S, self.limits.answer_bytes)
            failure: SandboxError | None = None
            try:
                verdict = run_check(task, channel, self.limits.timeout_s)
                # When it ended by itself, its exit status says more (e.g. killed by SIGXCPU).
                exit_code = _exit_status(process, within_s=1.0 if verdict.ended else 0.0)
            except SandboxError as exc:
                failure = exc
            finally:
                _stop(process)
            text = _tail(output, self.limits.output_chars)
        if failure is not None:
            raise SandboxError(f"{failure}; its output: {text[-1000:] or '(none)'}") from failure
        status = verdict.status
        if exit_code is not None and exit_code < 0 and not verdict.passed and status != "timeout":
            status = f"killed by {signal.Signals(-exit_code).name}"
        text = "\n".join(part for part in (text, verdict.reason) if part)
        return SandboxResult(verdict.passed, status, exit_code, time.monotonic() - start, text)

    def _argv(self, uid: int | None, workdir: str | None, requests: int, answers: int) -> list[str]:
        cpu = max(1, int(self.limits.timeout_s + 0.999))
        limits = [
            f"--as={self.limits.memory_bytes}",
            f"--cpu={cpu}:{cpu + 1}",
            f"--nproc={self.limits.max_processes}",
            f"--fsize={self.limits.max_file_bytes}",
            f"--nofile={self.limits.max_open_files}",
            "--core=0",
        ]
        config = {
            "root": str(ROOT),
            "requests": requests,
            "answers": answers,
            "uid": uid,  # None: stay this user in `workdir` (unsafe mode)
            "workdir": workdir,
            "host_mount_ns": _mount_namespace(),
            "work_bytes": self.limits.work_bytes,
            "landlock_abi": self.landlock_abi,
            "seccomp": self.seccomp,
        }
        wrapper = [*UNSHARE, "--"] if uid is not None else []
        return ["prlimit", *limits, "--", *wrapper, self.python, "-I", "-B", "-u", "-c", BOOTSTRAP, json.dumps(config)]


def _exit_status(process: subprocess.Popen[bytes], within_s: float) -> int | None:
    """Its exit status if it ends within `within_s`, without reaping it (its pid stays its group's)."""
    deadline = time.monotonic() + within_s
    while True:
        info = os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        if info is not None and info.si_pid:
            return info.si_status if info.si_code == os.CLD_EXITED else -info.si_status
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.01)


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Its whole session: anything it left behind goes too (the pid namespace ends with its init).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _tail(output: IO[bytes], chars: int) -> str:
    """The end of what it printed (up to RLIMIT_FSIZE of it), without reading the rest."""
    size = output.seek(0, os.SEEK_END)
    output.seek(max(0, size - 4 * chars))  # up to 4 bytes per character in UTF-8
    return output.read().decode(errors="replace").strip()[-chars:]


def _mount_namespace() -> str:
    """Ours, so the harness can check it is in a different one before it touches mounts."""
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return "unknown"


def sandbox_python() -> str:
    """An interpreter the sandbox uid may execute and whose standard library it may read.

    The venv's interpreter may live under a private /root; the harness imports this project's
    modules as root before the drop, but the model's own imports happen after it.
    """
    candidates = [os.path.realpath(sys.executable), "/usr/bin/python3", shutil.which("python3") or ""]
    for candidate in candidates:
        if candidate and _world_executable(Path(candidate)):
            return candidate
    raise SandboxError(f"no Python interpreter executable by an unprivileged user among {candidates}")


def free_uids(count: int) -> list[int]:
    """`count` uids from FIRST_SANDBOX_UID up that no account uses."""
    uids: list[int] = []
    uid = FIRST_SANDBOX_UID
    while len(uids) < count:
        try:
            pwd.getpwuid(uid)
        except KeyError:
            uids.append(uid)
        uid += 1
    return uids


def _world_executable(path: Path) -> bool:
    path = path.resolve()
    if not path.is_file() or not path.stat().st_mode & stat.S_IXOTH:
        return False
    return all(parent.stat().st_mode & stat.S_IXOTH for parent in path.parents)
