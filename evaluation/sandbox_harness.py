"""Runs inside the sandbox process (see sandbox.py), never imported by the harness itself.

    python -I -B -c "<this file's text>" WORKDIR guard|noguard same|UID HOST_MNT_NS   < nonce

It reads a one-time nonce from stdin and the program from WORKDIR/program.py. Given a UID
(namespaces mode: it starts as root inside fresh network, pid and mount namespaces), it first
mounts private, empty tmpfs over /tmp, /var/tmp and /dev/shm (the places an unprivileged user
could otherwise write to), makes /tmp/work its working directory, and drops to UID. Then it
optionally installs an audit hook that turns network, process and out-of-directory write
attempts into PermissionError, executes the program with `__name__ != "__main__"`, and prints the
nonce only if the program ran to the end. The parent counts a run as passed only when it sees
that nonce: exiting early with status 0 (`sys.exit(0)`, `os._exit(0)`) before the tests have run
is a failure. (The nonce guards against accidents, not against code that goes looking for it in
this process's memory.)

The hook is a convenience that makes an attempt fail fast with a clear message; the operating
system limits around this process (namespaces, unprivileged user, rlimits, process group) are
what contain code that gets past it.
"""

import os
import subprocess
import sys
import traceback

# Events that have no business in a HumanEval solution.
BLOCKED_EVENTS = frozenset(
    {
        "socket.__new__",
        "socket.connect",
        "socket.bind",
        "socket.getaddrinfo",
        "os.system",
        "os.exec",
        "os.posix_spawn",
        "os.spawn",
        "os.fork",
        "os.forkpty",
        "subprocess.Popen",
        "os.kill",
        "os.killpg",
        "ctypes.dlopen",
        "ctypes.dlsym",
        "ctypes.cdata",
    }
)
# Events whose path arguments must lie inside the working directory.
PATH_EVENTS = frozenset(
    {
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.mkdir",
        "os.chmod",
        "os.chown",
        "os.link",
        "os.symlink",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
        "shutil.move",
        "shutil.copyfile",
        "shutil.copytree",
    }
)
WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_TRUNC


def install_guard(workdir: str) -> None:
    root = os.path.realpath(workdir)

    def inside(path: object) -> bool:
        if not isinstance(path, (str, bytes, os.PathLike)):
            return True  # an already open descriptor was checked when it was opened
        real = os.path.realpath(os.fsdecode(path))
        return real == root or real.startswith(root + os.sep) or real == os.devnull

    def hook(event: str, args: tuple[object, ...]) -> None:
        if event in BLOCKED_EVENTS:
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = isinstance(mode, str) and any(c in mode for c in "wax+")
            writing = writing or (isinstance(flags, int) and flags > 0 and bool(flags & WRITE_FLAGS))
            if writing and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing {path!r} outside the working directory is not allowed")
        elif event in PATH_EVENTS:
            for arg in args[:2]:
                if isinstance(arg, (str, bytes, os.PathLike)) and not inside(arg):
                    raise PermissionError(f"sandbox: {event} on {arg!r} outside the working directory")

    sys.addaudithook(hook)


PRIVATE_DIRS = ("/tmp", "/var/tmp", "/dev/shm")


def enter_private_dirs(uid: int, host_mount_ns: str) -> str:
    """Cover the world-writable directories with private tmpfs mounts, then become `uid`."""
    if os.readlink("/proc/self/ns/mnt") == host_mount_ns:
        raise SystemExit("sandbox: not in a private mount namespace; refusing to mount over /tmp")
    for directory in PRIVATE_DIRS:
        if os.path.isdir(directory):
            options = "size=64m,mode=1777,nosuid,nodev"
            subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", directory], check=True)
    workdir = "/tmp/work"
    os.mkdir(workdir, 0o700)
    os.chown(workdir, uid, uid)
    os.setgroups([])
    os.setgid(uid)
    os.setuid(uid)
    return workdir


def main() -> None:
    source_dir, mode, user, host_mount_ns = sys.argv[1:5]
    nonce = sys.stdin.readline().strip()
    sys.stdin.close()
    with open(os.path.join(source_dir, "program.py")) as f:
        source = f.read()
    workdir = source_dir if user == "same" else enter_private_dirs(int(user), host_mount_ns)
    os.chdir(workdir)
    if mode == "guard":
        install_guard(workdir)
    try:
        exec(compile(source, "program.py", "exec"), {"__name__": "__sandbox__", "__builtins__": __builtins__})
    except BaseException:  # SystemExit too: leaving before the tests ran is not passing them
        traceback.print_exc()
        sys.stderr.flush()
        os._exit(1)
    sys.stderr.flush()
    sys.stdout.write(f"\n{nonce}\n")
    sys.stdout.flush()
    os._exit(0)


main()
