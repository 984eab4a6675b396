"""The sandbox process's own side (see sandbox.py); standard library only, run as

    python -I -B -u -c "<bootstrap: main(json.loads(sys.argv[1]))>" '{"requests": 3, "answers": 4, "uid": 64000, ...}'

It reads one setup message from the `requests` pipe (the model's program and the name of the
function the test calls), confines itself (sandbox_confine.py), runs the program and then answers
calls: each request is one line of encoded arguments, each answer one line holding the encoded
return value or the exception it raised. The test itself, and so the verdict, never enters this
process: the parent runs it and calls the function through this loop.

Everything here can be undone by the model's code, since it runs in the same interpreter: it can
answer with anything, exit, or write on the pipes itself. None of that grades it passed, because
the only thing the parent takes from this process is data (sandbox_codec.py), which the test
then compares. Messages it sends before the program runs ("confined") are trustworthy only in
that order: the parent reads them before any model code exists.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from evaluation import sandbox_codec, sandbox_confine


class Pipe:
    """Line-delimited JSON on two inherited descriptors."""

    def __init__(self, requests: int, answers: int) -> None:
        self.requests = os.fdopen(requests, "rb", buffering=1 << 16)
        self.answers = answers

    def receive(self) -> bytes:
        return self.requests.readline()

    def send(self, message: dict[str, Any]) -> None:
        self.send_line(json.dumps(message, separators=(",", ":")))

    def send_line(self, line: str) -> None:
        data = (line + "\n").encode()
        while data:
            data = data[os.write(self.answers, data) :]


def confine(config: dict[str, Any]) -> str:
    """Every layer the parent asked for, or an exception: nothing runs half-confined."""
    if config["uid"] is not None:
        workdir = sandbox_confine.enter_jail(config["uid"], config["host_mount_ns"], config["work_bytes"])
    else:
        workdir = config["workdir"]
    os.chdir(workdir)
    sandbox_confine.forbid_new_privileges()
    if config["landlock_abi"]:
        sandbox_confine.restrict_writes(workdir, config["landlock_abi"])
    if config["seccomp"]:
        sandbox_confine.restrict_syscalls()
    return workdir


def serve(pipe: Pipe, function: Callable[..., object]) -> None:
    while request := pipe.receive():
        try:
            args, kwargs = sandbox_codec.decode(request)
            # Encoded here, so a value that cannot be (too deep, too many digits) is this call's error.
            line = json.dumps({"value": sandbox_codec.to_data(function(*args, **kwargs))}, separators=(",", ":"))
        except BaseException as exc:  # SystemExit and KeyboardInterrupt too: the call failed
            line = json.dumps({"raised": [type(exc).__name__, _message(exc)]})
        pipe.send_line(line)


def _message(exc: BaseException) -> str:
    try:
        return str(exc)[:500]
    except Exception:  # a hostile __str__
        return "(no message)"


def main(config: dict[str, Any]) -> None:
    pipe = Pipe(int(config["requests"]), int(config["answers"]))
    setup = json.loads(pipe.receive())
    try:
        confine(config)
    except Exception as exc:
        pipe.send({"setup_error": f"{type(exc).__name__}: {exc}"})
        os._exit(3)
    pipe.send({"confined": True})
    namespace: dict[str, object] = {"__name__": "__sandbox__", "__builtins__": __builtins__}
    try:
        exec(compile(setup["program"], "program.py", "exec"), namespace)
        function = namespace[setup["entry_point"]]
        if not callable(function):
            raise TypeError(f"{setup['entry_point']} is not a function")
    except BaseException as exc:  # a syntax error, a missing function, sys.exit() at import time...
        import traceback  # noqa: PLC0415 (only on this path: it costs every run a few ms to import)

        traceback.print_exc()
        sys.stderr.flush()
        pipe.send({"program_error": f"{type(exc).__name__}: {_message(exc)}"})
        os._exit(1)
    pipe.send({"ready": True})
    serve(pipe, function)
    sys.stdout.flush()
    os._exit(0)
