"""What an engine costs while it runs: memory of its process tree, idle CPU.

rss = tree_rss_bytes(pid)                            # the engine and every child (vLLM's EngineCore)
with PeakSampler(pid) as peak: ... run load ...;  peak.rss_bytes
idle_cpu_percent(pid, seconds=5)                     # % of one core, whole tree
with CpuMeter({"engine": pid}) as used: ... run load ...;  used.seconds["engine"]
gpu_memory_bytes()                                   # NVML device memory in use, or None without a GPU
listener_pid(8112)                                   # the process serving a port (engines we did not start)
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from types import TracebackType

import psutil


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        parent = psutil.Process(pid)
        return [parent, *parent.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def free_port() -> int:
    """A local TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time one process has used so far."""
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for process in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            total += process.memory_info().rss
    return total


def idle_cpu_percent(pid: int, *, seconds: float = 5.0) -> float:
    """CPU used by the whole tree over `seconds`, in percent of one core (200 = two cores busy)."""
    with CpuMeter({"tree": pid}) as meter:
        time.sleep(seconds)
    return 100.0 * meter.cores["tree"]


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and every child it has now."""
    used = 0.0
    for process in process_tree(pid):
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            times = process.cpu_times()
            used += times.user + times.system
    return used


class CpuMeter:
    """CPU seconds that named processes use while the block runs.

    `trees` are counted with their children (an engine and its EngineCore); `own` alone (a
    process whose children are somebody else's, such as a benchmark that started the engines).
    After the block: `seconds` per name, `wall_s`, and `cores` (seconds / wall) per name."""

    def __init__(self, trees: dict[str, int], own: dict[str, int] | None = None) -> None:
        self._trees, self._own = trees, own or {}
        self.seconds: dict[str, float] = {}
        self.wall_s = 0.0

    def _read(self) -> dict[str, float]:
        return {name: tree_cpu_seconds(pid) for name, pid in self._trees.items()} | {
            name: cpu_seconds(pid) for name, pid in self._own.items()
        }

    def __enter__(self) -> CpuMeter:
        self._before, self._started = self._read(), time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        after = self._read()
        self.wall_s = time.perf_counter() - self._started
        self.seconds = {name: after[name] - self._before[name] for name in after}

    @property
    def cores(self) -> dict[str, float]:
        return {name: used / self.wall_s for name, used in self.seconds.items()} if self.wall_s else {}

    def as_dict(self) -> dict[str, object]:
        return {"cpu_s": self.seconds, "cpu_wall_s": self.wall_s}


class PeakSampler:
    """Samples the tree's RSS (and GPU memory when present) every `interval_s` in a thread."""

    def __init__(self, pid: int, *, interval_s: float = 0.25) -> None:
        self.pid = pid
        self.interval_s = interval_s
        self.rss_bytes = 0
        self.gpu_bytes: int | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.rss_bytes = max(self.rss_bytes, tree_rss_bytes(self.pid))
            gpu = gpu_memory_bytes()
            if gpu is not None:
                self.gpu_bytes = max(self.gpu_bytes or 0, gpu)
            self._stop.wait(self.interval_s)


def gpu_memory_bytes() -> int | None:
    """Device memory in use on all NVIDIA GPUs (NVML), or None where there is none."""
    try:
        import pynvml  # noqa: PLC0415 - optional: nvidia-ml-py, useful only with a GPU

        pynvml.nvmlInit()
    except Exception:  # no library, no driver or no device: all mean "no GPU here"
        return None
    try:
        return sum(
            int(pynvml.nvmlDeviceGetMemoryInfo(pynvml.nvmlDeviceGetHandleByIndex(i)).used)
            for i in range(pynvml.nvmlDeviceGetCount())
        )
    finally:
        pynvml.nvmlShutdown()


def listener_pid(port: int) -> int | None:
    """The pid listening on a local TCP port, topmost of its tree (vLLM's API server, not a worker)."""
    pids = {
        c.pid for c in psutil.net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr.port == port
    }
    pids.discard(None)
    if not pids:
        return None
    pid = min(pids)
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid).parent()
        # vLLM's API server may run under a launcher; keep climbing while the parent listens too.
        while parent is not None and parent.pid in pids:
            pid, parent = parent.pid, parent.parent()
    return int(pid)
