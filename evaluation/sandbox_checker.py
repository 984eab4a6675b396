"""The verdict, decided outside the sandbox: the test's check() runs here, in the parent.

    verdict = run_check(task, channel, timeout_s=10)   # channel: pipes to a freshly started sandbox
    verdict.passed, verdict.status, verdict.reason

The sandbox runs only the model's program and serves calls to its function (sandbox_harness.py).
Here the trusted part of the problem (the prompt's helpers and the test) runs with `Candidate`
in the function's place: each call sends the arguments over, waits for the answer within the
run's deadline and returns it decoded as plain data (sandbox_codec.py). So a pass means the
test's own assertions held on the function's answers, evaluated in a process the model's code
cannot reach: printing, exit codes, patched builtins, trace functions or objects that claim to
equal anything do not reach this verdict.
"""

from __future__ import annotations

import json
import os
import select
import time
import traceback
from dataclasses import dataclass
from typing import Any

from evaluation import sandbox_codec


@dataclass(frozen=True)
class CodeTask:
    """One program to judge: `program` runs in the sandbox; `helpers` and `test` run here."""

    program: str  # the model's code, with whatever prompt text it needs (imports, helpers)
    entry_point: str  # the function the test calls
    test: str  # defines check(candidate), which raises when the answer is wrong
    helpers: str = ""  # trusted code the test may use (HumanEval's prompt: poly(), encode_cyclic())


@dataclass(frozen=True)
class Verdict:
    passed: bool
    status: str  # passed | failed | timeout
    reason: str  # one line; empty when passed
    ended: bool = False  # the sandbox process closed its end before the verdict


class SandboxError(RuntimeError):
    """The sandbox itself failed (a confinement layer could not be put in place): not a verdict."""


class ChannelTimeout(Exception):
    """The run's deadline passed while waiting for the sandbox."""


class ChannelClosed(Exception):
    """The sandbox process closed its end: it exited, was killed, or closed the pipe itself."""


class CandidateRaised(Exception):
    """The model's function raised; the test fails as it would if the exception reached it."""


class BadAnswer(Exception):
    """The sandbox sent something that is not a well-formed answer (too long, not JSON, not data)."""


class Channel:
    """Line-delimited JSON to and from the sandbox, every wait bounded by `deadline` (monotonic)."""

    def __init__(self, send_fd: int, receive_fd: int, deadline: float, max_bytes: int) -> None:
        self.send_fd = send_fd
        self.receive_fd = receive_fd
        self.deadline = deadline
        self.max_bytes = max_bytes  # one answer; more is a failure, not memory spent here
        self._buffer = b""
        os.set_blocking(send_fd, False)

    def send(self, line: str) -> None:
        data = (line + "\n").encode()
        while data:
            self._wait(self.send_fd, writing=True)
            try:
                data = data[os.write(self.send_fd, data) :]
            except BlockingIOError:
                continue
            except BrokenPipeError as exc:
                raise ChannelClosed("the sandbox stopped reading") from exc

    def receive(self) -> dict[str, Any]:
        while b"\n" not in self._buffer:
            if len(self._buffer) > self.max_bytes:
                raise BadAnswer(f"longer than {self.max_bytes} bytes")
            self._wait(self.receive_fd, writing=False)
            chunk = os.read(self.receive_fd, 1 << 16)
            if not chunk:
                raise ChannelClosed("the sandbox process ended")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        try:
            message = json.loads(line)
        except (ValueError, RecursionError) as exc:
            raise BadAnswer(f"not JSON: {line[:100]!r}") from exc
        if not isinstance(message, dict):
            raise BadAnswer(f"not a message: {line[:100]!r}")
        return message

    def _wait(self, fd: int, *, writing: bool) -> None:
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise ChannelTimeout
        poll = select.poll()  # not select(): the eval process may hold more than 1024 descriptors
        poll.register(fd, select.POLLOUT if writing else select.POLLIN)
        if not poll.poll(remaining * 1000):
            raise ChannelTimeout


class Candidate:
    """Stands in for the model's function in check(): each call is answered by the sandbox."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.channel.send(sandbox_codec.encode([list(args), kwargs]))
        answer = self.channel.receive()
        if "value" in answer:
            try:
                return sandbox_codec.from_data(answer["value"])
            except (ValueError, TypeError, RecursionError) as exc:
                raise BadAnswer(f"not plain data: {exc}") from exc
        raised = answer.get("raised")
        if isinstance(raised, list) and len(raised) == 2:
            raise CandidateRaised(f"{raised[0]}: {raised[1]}"[:500])
        raise BadAnswer(f"neither a value nor an exception: {str(answer)[:100]}")


def run_check(task: CodeTask, channel: Channel, timeout_s: float) -> Verdict:
    """Hand the program over, wait until it is confined and loaded, then run check() here.

    `timeout_s` is the program's: it starts once the sandbox is confined, so a slow start on a
    busy machine is not counted against the model. (The channel's deadline until then is the
    caller's limit on starting at all.)
    """
    _start(task, channel)
    channel.deadline = time.monotonic() + timeout_s
    try:
        loaded = channel.receive()
        if "ready" not in loaded:
            return Verdict(False, "failed", str(loaded.get("program_error", loaded))[:300])
        candidate = Candidate(channel)
        check = _load_check(task, candidate)
        check(candidate)
    except ChannelTimeout:
        return Verdict(False, "timeout", f"no answer within {timeout_s:g} s")
    except ChannelClosed as exc:
        return Verdict(False, "failed", str(exc), ended=True)
    except CandidateRaised as exc:
        return Verdict(False, "failed", f"the function raised {exc}")
    except BadAnswer as exc:
        return Verdict(False, "failed", f"bad answer from the sandbox: {exc}")
    except Exception as exc:  # the test's own assertion, or an error on the answer's data
        return Verdict(False, "failed", _describe_failure(exc, task.test))
    return Verdict(True, "passed", "")


def _start(task: CodeTask, channel: Channel) -> None:
    """Until "confined" arrives no model code has run, so anything else here is the sandbox's fault."""
    try:
        channel.send(json.dumps({"program": task.program, "entry_point": task.entry_point}))
        setup = channel.receive()
    except (ChannelTimeout, ChannelClosed, BadAnswer) as exc:
        raise SandboxError(f"the sandbox did not start: {type(exc).__name__} {exc}".strip()) from exc
    if "confined" not in setup:
        raise SandboxError(f"the sandbox could not confine itself: {setup.get('setup_error', setup)}")


def _load_check(task: CodeTask, candidate: Candidate) -> Any:
    namespace: dict[str, Any] = {"__name__": "__check__"}
    exec(compile(task.helpers, "<helpers>", "exec"), namespace)  # trusted problem text, not the model's
    # Some tests also call the function by its name (HumanEval/33: sort_third), not only as `candidate`.
    namespace[task.entry_point] = candidate
    exec(compile(task.test, "<test>", "exec"), namespace)
    return namespace["check"]


def _describe_failure(exc: Exception, test: str) -> str:
    """ "AssertionError: test line 12: assert candidate(3) == 9" (the test's line that failed)."""
    lines = test.splitlines()
    where = ""
    for frame in traceback.extract_tb(exc.__traceback__):
        if frame.filename == "<test>" and frame.lineno and frame.lineno <= len(lines):
            where = f"test line {frame.lineno}: {lines[frame.lineno - 1].strip()}"
    message = str(exc)
    return ": ".join(part for part in (type(exc).__name__, where, message) if part)[:300]
