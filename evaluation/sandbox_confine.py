"""Kernel-enforced confinement the sandbox process applies to itself before the model's code runs.

    enter_jail(uid=64000, host_mount_ns="mnt:[4026531841]", work_bytes=64 << 20)  # -> "/tmp/work"
    forbid_new_privileges()
    restrict_writes("/tmp/work", landlock_abi())    # Landlock, where the kernel has it
    restrict_syscalls()                             # seccomp: the last step, it also forbids mount

Standard library only: it runs in the sandbox's interpreter (sandbox_harness.py) before the drop
to the unprivileged uid; the parent only imports `landlock_abi` and `seccomp_supported` to say
what will be in force.

- enter_jail (namespaces mode, root in fresh mount and pid namespaces): a /proc of the sandbox's
  own pid namespace, an empty /sys, a /dev with null, zero, full, random and urandom only, every
  mount read-only (per mount point, MS_BIND: the host's
  mounts are untouched), a size-capped tmpfs on /tmp whose /tmp/work is the only writable place,
  then the unprivileged uid with no groups and no capabilities.
- restrict_syscalls: a seccomp filter that no later code can remove. It refuses new processes
  (fork, vfork, execve, clone without CLONE_THREAD; clone3 answers ENOSYS so glibc falls back to
  clone for threads), sockets, access to other processes (ptrace, process_vm_*, every kind of
  kill, pidfd), mounts and namespaces, and kernel objects that hold memory outside the address
  space limit (memfd, SysV and POSIX IPC, io_uring, bpf, keys). The sandbox is therefore one
  process, and RLIMIT_AS plus the tmpfs size bound everything it can hold.
- restrict_writes (Landlock): file creation, writing, truncation and removal only beneath the
  work directory (and /dev/null), no TCP, and no ptrace of, signals to or abstract sockets of
  processes outside the sandbox, even for a same-uid process without namespaces.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
import stat
import struct

# <linux/mount.h>
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_NOEXEC = 0x8
MS_REMOUNT = 0x20
MS_NOATIME = 0x400
MS_NODIRATIME = 0x800
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_RELATIME = 0x200000
MS_STRICTATIME = 0x1000000
# Per-mount flags a read-only remount must keep (dropping nosuid or noexec would loosen a mount).
KEPT_FLAGS = {
    "nosuid": MS_NOSUID,
    "nodev": MS_NODEV,
    "noexec": MS_NOEXEC,
    "noatime": MS_NOATIME,
    "nodiratime": MS_NODIRATIME,
    "relatime": MS_RELATIME,
    "strictatime": MS_STRICTATIME,
}
DEVICES = {"null": 3, "zero": 5, "full": 7, "random": 8, "urandom": 9}  # character devices, major 1
DEV_LINKS = {
    "fd": "/proc/self/fd",
    "stdin": "/proc/self/fd/0",
    "stdout": "/proc/self/fd/1",
    "stderr": "/proc/self/fd/2",
}
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2
CLONE_THREAD = 0x10000
EPERM = 1
ENOSYS = 38

# Syscall numbers per machine: <asm/unistd_64.h> for x86_64, <asm-generic/unistd.h> for aarch64
# (which has no fork, vfork or SysV-only entry points of its own).
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SYSCALLS = {
    "x86_64": {
        "fork": 57, "vfork": 58, "execve": 59, "execveat": 322, "clone": 56, "clone3": 435,
        "socket": 41, "socketpair": 53,
        "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "kill": 62, "tkill": 200,
        "tgkill": 234, "rt_sigqueueinfo": 129, "rt_tgsigqueueinfo": 297, "pidfd_open": 434,
        "pidfd_getfd": 438, "pidfd_send_signal": 424,
        "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161, "unshare": 272, "setns": 308,
        "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsmount": 432, "fsconfig": 431, "fspick": 433,
        "mount_setattr": 442,
        "memfd_create": 319, "memfd_secret": 447, "shmget": 29, "msgget": 68, "semget": 64, "mq_open": 240,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "bpf": 321,
        "perf_event_open": 298, "userfaultfd": 323, "keyctl": 250, "add_key": 248, "request_key": 249,
        "kexec_load": 246, "kexec_file_load": 320, "init_module": 175, "finit_module": 313,
        "delete_module": 176, "reboot": 169, "swapon": 167, "swapoff": 168, "open_by_handle_at": 304,
        "acct": 163, "quotactl": 179,
    },
    "aarch64": {
        "execve": 221, "execveat": 281, "clone": 220, "clone3": 435,
        "socket": 198, "socketpair": 199,
        "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "kill": 129, "tkill": 130,
        "tgkill": 131, "rt_sigqueueinfo": 138, "rt_tgsigqueueinfo": 240, "pidfd_open": 434,
        "pidfd_getfd": 438, "pidfd_send_signal": 424,
        "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51, "unshare": 97, "setns": 268,
        "move_mount": 429, "open_tree": 428, "fsopen": 430, "fsmount": 432, "fsconfig": 431, "fspick": 433,
        "mount_setattr": 442,
        "memfd_create": 279, "memfd_secret": 447, "shmget": 194, "msgget": 186, "semget": 190, "mq_open": 180,
        "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "bpf": 280,
        "perf_event_open": 241, "userfaultfd": 282, "keyctl": 219, "add_key": 217, "request_key": 218,
        "kexec_load": 104, "kexec_file_load": 294, "init_module": 105, "finit_module": 273,
        "delete_module": 106, "reboot": 142, "swapon": 224, "swapoff": 225, "open_by_handle_at": 265,
        "acct": 89, "quotactl": 60,
    },
}  # fmt: skip
X32_SYSCALL_BIT = 0x40000000  # x86_64's x32 ABI: a second table for the same calls, refused whole

# Landlock (<linux/landlock.h>); the three syscalls have the same numbers on every architecture.
LANDLOCK_CREATE_RULESET = 444
LANDLOCK_ADD_RULE = 445
LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_WRITE_FILE = 1 << 1
FS_WRITES = sum(1 << bit for bit in (1, 4, 5, 6, 7, 8, 9, 10, 11, 12))  # write, remove, make any kind of node
FS_REFER = 1 << 13  # ABI 2: link or rename into another directory
FS_TRUNCATE = 1 << 14  # ABI 3
NET_TCP = 0b11  # ABI 4: bind and connect
SCOPE_ALL = 0b11  # ABI 6: abstract unix sockets and signals of processes outside the domain


class ConfinementError(RuntimeError):
    """A layer that was asked for could not be put in place; the sandbox must not run code."""


@functools.cache
def _libc() -> ctypes.CDLL:
    return ctypes.CDLL(None, use_errno=True)


def _syscall(number: int, *args: int | bytes | None) -> int:
    # Integers go as C longs: the kernel reads whole registers, and ctypes would pass a C int.
    converted = [ctypes.c_long(arg) if isinstance(arg, int) else arg for arg in args]
    return int(_libc().syscall(ctypes.c_long(number), *converted))


def _prctl(option: int, argument: int) -> int:
    zero = ctypes.c_ulong(0)
    return int(_libc().prctl(ctypes.c_int(option), ctypes.c_ulong(argument), zero, zero, zero))


def _check(result: int, what: str) -> int:
    if result < 0:
        errno = ctypes.get_errno()
        raise ConfinementError(f"{what}: {os.strerror(errno)} (errno {errno})")
    return result


def enter_jail(uid: int, host_mount_ns: str, work_bytes: int) -> str:
    """Namespaces mode, as root in fresh mount and pid namespaces: build the view, become `uid`."""
    if os.readlink("/proc/self/ns/mnt") == host_mount_ns:
        raise ConfinementError("not in a private mount namespace; refusing to touch mounts")
    libc = _libc()
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p]

    def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
        kind = fstype.encode() if fstype else None
        code = libc.mount(source.encode(), os.fsencode(target), kind, flags, data.encode() if data else None)
        _check(int(code), f"mount {target}")

    mount("none", "/", None, MS_REC | MS_PRIVATE)  # nothing done here may propagate to the host
    with open("/proc/self/oom_score_adj", "w") as f:
        f.write("1000")  # under memory pressure the kernel takes the sandbox before anything else
    for target, options in _mounts():
        if "ro" not in options and os.path.lexists(target):  # a missing path: hidden by another mount
            kept = sum(flag for name, flag in KEPT_FLAGS.items() if name in options)
            mount("none", target, None, MS_REMOUNT | MS_BIND | MS_RDONLY | kept)
    sealed = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC
    mount("proc", "/proc", "proc", sealed)  # this pid namespace's processes only
    if os.path.isdir("/sys"):
        mount("tmpfs", "/sys", "tmpfs", sealed, "size=4k,mode=555")  # cgroup files list host pids
    # A /dev of the harmless devices only (no kmsg, fuse, tun or disks), then read-only.
    mount("tmpfs", "/dev", "tmpfs", MS_NOSUID | MS_NOEXEC, "size=64k,mode=755")
    for name, minor in DEVICES.items():
        os.mknod(f"/dev/{name}", stat.S_IFCHR, os.makedev(1, minor))
        os.chmod(f"/dev/{name}", 0o666)
    for name, target in DEV_LINKS.items():
        os.symlink(target, f"/dev/{name}")
    mount("none", "/dev", None, MS_REMOUNT | MS_BIND | MS_RDONLY | MS_NOSUID | MS_NOEXEC)
    # The one writable place: root-owned /tmp (mode 755) holding the uid's own work directory.
    mount("tmpfs", "/tmp", "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, f"size={work_bytes},mode=755")
    workdir = "/tmp/work"
    os.mkdir(workdir, 0o700)
    os.chown(workdir, uid, uid)
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)  # from root to a plain uid: every capability goes with it
    return workdir


def _mounts() -> list[tuple[str, set[str]]]:
    """(mount point, per-mount options) from /proc/self/mountinfo, parents before children."""
    mounts = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            fields = line.split()
            target = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m[1], 8)), fields[4])
            mounts.append((target, set(fields[5].split(","))))
    return mounts


def forbid_new_privileges() -> None:
    """No setuid binary or file capability can raise privileges again (seccomp and Landlock need it)."""
    _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "prctl(PR_SET_NO_NEW_PRIVS)")


def seccomp_supported() -> bool:
    return os.uname().machine in SYSCALLS


def restrict_syscalls() -> None:
    """Install the seccomp filter (see the module docstring); it holds until the process ends."""
    machine = os.uname().machine
    if machine not in SYSCALLS:
        raise ConfinementError(f"no seccomp syscall table for {machine}")
    program = _seccomp_program(AUDIT_ARCH[machine], SYSCALLS[machine], x32=machine == "x86_64")
    filters = ctypes.create_string_buffer(b"".join(program))
    fprog = struct.pack("HL", len(program), ctypes.addressof(filters))  # struct sock_fprog
    fprog_buffer = ctypes.create_string_buffer(fprog)
    code = _libc().prctl(
        ctypes.c_int(PR_SET_SECCOMP),
        ctypes.c_ulong(SECCOMP_MODE_FILTER),
        ctypes.c_void_p(ctypes.addressof(fprog_buffer)),
    )
    _check(int(code), "prctl(PR_SET_SECCOMP)")


def _seccomp_program(arch: int, numbers: dict[str, int], *, x32: bool) -> list[bytes]:
    """Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}."""

    def op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
        return struct.pack("HBBI", code, jt, jf, k)

    load, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    allow, kill_process = 0x7FFF0000, 0x80000000
    errno = 0x00050000  # SECCOMP_RET_ERRNO | errno
    program = [op(load, 4), op(jeq, arch, 1, 0), op(ret, kill_process), op(load, 0)]
    if x32:
        program += [op(jge, X32_SYSCALL_BIT, 0, 1), op(ret, errno | EPERM)]
    for name, number in numbers.items():
        if name != "clone":
            program += [op(jeq, number, 0, 1), op(ret, errno | (ENOSYS if name == "clone3" else EPERM))]
    program += [
        op(jeq, numbers["clone"], 0, 3),
        op(load, 16),  # low half of args[0], the clone flags (little-endian)
        op(jset, CLONE_THREAD, 1, 0),  # a thread shares the address space, so RLIMIT_AS still binds
        op(ret, errno | EPERM),
        op(ret, allow),
    ]
    return program


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 where there is none (old kernel, or not enabled)."""
    return max(0, _syscall(LANDLOCK_CREATE_RULESET, None, 0, LANDLOCK_CREATE_RULESET_VERSION))


def restrict_writes(workdir: str, abi: int) -> None:
    """Landlock domain: writes only beneath `workdir`; no TCP (ABI 4); no reach outside (ABI 6)."""
    if abi < 1:
        raise ConfinementError("Landlock is not available in this kernel")
    handled = FS_WRITES | (FS_REFER if abi >= 2 else 0) | (FS_TRUNCATE if abi >= 3 else 0)
    attr = struct.pack("QQQ", handled, NET_TCP if abi >= 4 else 0, SCOPE_ALL if abi >= 6 else 0)
    size = 8 if abi < 4 else 16 if abi < 6 else 24
    ruleset = _check(_syscall(LANDLOCK_CREATE_RULESET, attr, size, 0), "landlock_create_ruleset")
    try:
        file_rights = FS_WRITE_FILE | (FS_TRUNCATE if abi >= 3 else 0)
        for path, rights in ((workdir, handled), (os.devnull, file_rights)):
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            try:
                rule = struct.pack("=Qi", rights, fd)  # struct landlock_path_beneath_attr is packed
                _check(_syscall(LANDLOCK_ADD_RULE, ruleset, LANDLOCK_RULE_PATH_BENEATH, rule, 0), f"Landlock {path}")
            finally:
                os.close(fd)
        _check(_syscall(LANDLOCK_RESTRICT_SELF, ruleset, 0), "landlock_restrict_self")
    finally:
        os.close(ruleset)
