"""Run model-written code in a separate, limited process and say whether it passed.

    sandbox = Sandbox(SandboxLimits(timeout_s=10))
    result = sandbox.run(program_text)        # blocking; call it from a thread in async code
    result.passed, result.status, result.output

Layers, outermost first (`Sandbox.isolation` names the ones in force; it is recorded in results):

- "namespaces" (root with util-linux `unshare`, as on these machines): the program runs under
  `unshare --net --pid --mount --fork --kill-child`, then as an unprivileged uid of its own (one
  per concurrent run, so RLIMIT_NPROC really binds: it does not bind root). No network interface
  but a down loopback; a private pid namespace whose every process dies with its init; private
  empty tmpfs over /tmp, /var/tmp and /dev/shm (its working directory is /tmp/work there), so the
  world-writable places it could reach vanish with it; files owned by root (the project, the
  venv) are read-only to it.
- "rlimits" (anything else): same user, no namespaces; only the layers below.
- Always: `prlimit` caps address space, CPU seconds, process count, file size and open files; a
  new session whose process group is SIGKILLed at the end (after a wall-clock timeout at the
  latest); a throwaway working directory, deleted afterwards; a minimal environment; stdin is
  the nonce only; and an audit hook (sandbox_harness.py) that turns socket creation,
  fork/exec/subprocess and writes outside the working directory into PermissionError.

A run passes only when the harness prints its one-time nonce after the program finished.
"""

from __future__ import annotations

import contextlib
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
import uuid
from dataclasses import dataclass
from pathlib import Path

HARNESS = Path(__file__).with_name("sandbox_harness.py")
FIRST_SANDBOX_UID = 64000  # unassigned uids are taken from here up, one per concurrent run


@dataclass(frozen=True)
class SandboxLimits:
    timeout_s: float = 10.0  # wall clock
    memory_bytes: int = 1 << 30  # RLIMIT_AS
    max_processes: int = 16  # RLIMIT_NPROC (per sandbox uid)
    max_file_bytes: int = 16 << 20  # RLIMIT_FSIZE: output and any file written
    max_open_files: int = 64
    output_chars: int = 2000  # tail of stdout+stderr kept in the result


@dataclass(frozen=True)
class SandboxResult:
    passed: bool
    status: str  # passed | failed | timeout | killed
    exit_code: int | None
    duration_s: float
    output: str  # tail of stdout and stderr, nonce removed

    @property
    def detail(self) -> str:
        last = next((line for line in reversed(self.output.splitlines()) if line.strip()), "")
        return self.status if self.passed or not last else f"{self.status}: {last[:200]}"


class Sandbox:
    def __init__(self, limits: SandboxLimits | None = None, *, parallel: int = 2, guard: bool = True) -> None:
        self.limits = limits or SandboxLimits()
        self.guard = guard  # the audit hook; tests switch it off to show the OS layers alone hold
        self.isolation = detect_isolation()
        self.python = sandbox_python(self.isolation)
        self._uids: queue.SimpleQueue[int] = queue.SimpleQueue()
        for uid in free_uids(parallel) if self.isolation == "namespaces" else [os.getuid()] * parallel:
            self._uids.put(uid)

    def describe(self) -> dict[str, object]:
        """What protected the runs, for the results file."""
        return {
            "isolation": self.isolation,
            "audit_hook": self.guard,
            "python": self.python,
            "timeout_s": self.limits.timeout_s,
            "memory_bytes": self.limits.memory_bytes,
            "max_processes": self.limits.max_processes,
            "network": "none (network namespace)" if self.isolation == "namespaces" else "audit hook only",
        }

    def run(self, program: str) -> SandboxResult:
        uid = self._uids.get()
        try:
            return self._run_as(uid, program)
        finally:
            self._uids.put(uid)

    def _run_as(self, uid: int, program: str) -> SandboxResult:
        nonce = uuid.uuid4().hex
        workdir = Path(tempfile.mkdtemp(prefix="eval-sandbox-"))
        try:
            (workdir / "program.py").write_text(program)
            # In namespaces mode the program works in a fresh /tmp/work the harness creates.
            home = "/tmp/work" if self.isolation == "namespaces" else str(workdir)
            with tempfile.TemporaryFile() as output:
                start = time.monotonic()
                process = subprocess.Popen(
                    self._argv(uid, workdir),
                    cwd=workdir,
                    stdin=subprocess.PIPE,
                    stdout=output,
                    stderr=subprocess.STDOUT,
                    env={"PATH": "/usr/bin:/bin", "HOME": home, "TMPDIR": home, "LANG": "C.UTF-8"},
                    start_new_session=True,
                )
                timed_out = False
                try:
                    process.communicate(f"{nonce}\n".encode(), timeout=self.limits.timeout_s)
                except subprocess.TimeoutExpired:
                    timed_out = True
                finally:
                    # Also after a normal exit: a background child left in the group dies here.
                    _kill_group(process.pid)
                    process.wait()
                duration = time.monotonic() - start
                output.seek(0)
                text = output.read().decode(errors="replace")
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        passed = not timed_out and process.returncode == 0 and nonce in text
        text = text.replace(nonce, "").strip()[-self.limits.output_chars :]
        if passed:
            status = "passed"
        elif timed_out:
            status = "timeout"
        elif process.returncode is not None and process.returncode < 0:
            status = f"killed by {signal.Signals(-process.returncode).name}"
        else:
            status = "failed"
        return SandboxResult(passed, status, process.returncode, duration, text)

    def _argv(self, uid: int, workdir: Path) -> list[str]:
        cpu = max(1, int(self.limits.timeout_s + 0.999))
        limits = [
            f"--as={self.limits.memory_bytes}",
            f"--cpu={cpu}:{cpu + 1}",
            f"--nproc={self.limits.max_processes}",
            f"--fsize={self.limits.max_file_bytes}",
            f"--nofile={self.limits.max_open_files}",
            "--core=0",
        ]
        argv = ["prlimit", *limits, "--"]
        user = "same"
        if self.isolation == "namespaces":
            argv += ["unshare", "--net", "--pid", "--mount", "--fork", "--kill-child=SIGKILL", "--"]
            user = str(uid)  # the harness drops to it after mounting its private /tmp
        harness = HARNESS.read_text()
        mode = "guard" if self.guard else "noguard"
        return [*argv, self.python, "-I", "-B", "-c", harness, str(workdir), mode, user, _mount_namespace()]


def detect_isolation() -> str:
    """ "namespaces" when we may create network, pid and mount namespaces and mount in them."""
    if not shutil.which("prlimit"):
        raise RuntimeError("the sandbox needs util-linux's `prlimit` (apt-get install util-linux)")
    if os.geteuid() != 0 or not shutil.which("unshare") or not shutil.which("mount"):
        return "rlimits"
    with tempfile.TemporaryDirectory(prefix="eval-sandbox-probe-") as target:
        probe = ["unshare", "--net", "--pid", "--mount", "--fork", "--", "mount", "-t", "tmpfs", "tmpfs", target]
        try:
            ok = subprocess.run(probe, capture_output=True, timeout=10, check=False).returncode == 0
        except (OSError, subprocess.SubprocessError):
            ok = False
    return "namespaces" if ok else "rlimits"


def _mount_namespace() -> str:
    """Ours, so the harness can check it is in a different one before mounting over /tmp."""
    try:
        return os.readlink("/proc/self/ns/mnt")
    except OSError:
        return "unknown"


def sandbox_python(isolation: str) -> str:
    """An interpreter the sandbox user may execute (the venv's may live under a private /root)."""
    candidates = [os.path.realpath(sys.executable), "/usr/bin/python3", shutil.which("python3") or ""]
    if isolation != "namespaces":
        return sys.executable
    for candidate in candidates:
        if candidate and _world_executable(Path(candidate)):
            return candidate
    raise RuntimeError(f"no Python interpreter executable by an unprivileged user among {candidates}")


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


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)
