"""A FAKE OpenAI upstream: answers instantly, so that a gateway's own cost can be measured.

    python -m benchmarks.fake_upstream --port 8390 [--tokens 8] [--token-delay-ms 0]
    with running(cores=[1]) as (port, pid): ...     # as a child process on a free port

It is not vLLM and generates nothing: `POST /v1/chat/completions` returns a fixed answer of
`--tokens` tokens, as one JSON body or (with `"stream": true`) as that many SSE chunks plus a
usage chunk and `[DONE]`, all at once or `--token-delay-ms` apart (to stand in for a slow engine);
`GET /health` and `GET /v1/models` answer like an engine does.
A raw asyncio protocol (uvloop when installed) rather than a web framework, so that the fake
costs a small fraction of what the gateway in front of it costs per request.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Callable, Iterator
from typing import Any

_MODEL = "fake-upstream"


def _chunk(index: int, text: str) -> bytes:
    body: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 0,
        "model": _MODEL,
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
    }
    if index == 0:
        body["choices"][0]["delta"]["role"] = "assistant"
    return f"data: {json.dumps(body)}\n\n".encode()


class FakeAnswers:
    """Pre-rendered responses: the fake does no work per request beyond parsing the body."""

    def __init__(self, tokens: int) -> None:
        usage = {"prompt_tokens": 16, "completion_tokens": tokens, "total_tokens": 16 + tokens}
        events = [_chunk(i, " tok") for i in range(tokens)]
        events.append(f"data: {json.dumps({'id': 'chatcmpl-fake', 'choices': [], 'usage': usage})}\n\n".encode())
        events.append(b"data: [DONE]\n\n")
        self.stream_chunks = [b"%x\r\n%s\r\n" % (len(e), e) for e in events] + [b"0\r\n\r\n"]
        message = {"role": "assistant", "content": " tok" * tokens}
        body = {
            "id": "chatcmpl-fake",
            "object": "chat.completion",
            "model": _MODEL,
            "choices": [{"index": 0, "message": message, "finish_reason": "length"}],
            "usage": usage,
        }
        self.json_body = json.dumps(body).encode()
        self.models = json.dumps({"object": "list", "data": [{"id": _MODEL, "object": "model"}]}).encode()


def _head(status: str, content_type: str, length: int | None) -> bytes:
    size = f"content-length: {length}\r\n" if length is not None else "transfer-encoding: chunked\r\n"
    return f"HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\n{size}\r\n".encode()


class FakeUpstreamProtocol(asyncio.Protocol):
    def __init__(self, answers: FakeAnswers, token_delay_s: float = 0.0) -> None:
        self.answers = answers
        self.token_delay_s = token_delay_s
        self.buffer = b""
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1")
            length = 0
            for line in head.split("\r\n")[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            self.respond(head.split(" ", 2), body)

    def respond(self, request_line: list[str], body: bytes) -> None:
        assert self.transport is not None
        method, path = request_line[0], request_line[1] if len(request_line) > 1 else "/"
        if method == "GET" and path == "/health":
            self.transport.write(_head("200 OK", "application/json", 2) + b"{}")
        elif method == "GET" and path == "/v1/models":
            self.transport.write(_head("200 OK", "application/json", len(self.answers.models)) + self.answers.models)
        elif method == "POST" and path in ("/v1/chat/completions", "/v1/completions"):
            stream = False
            with contextlib.suppress(ValueError, AttributeError):
                stream = bool(json.loads(body).get("stream"))
            if stream and self.token_delay_s:
                asyncio.get_running_loop().create_task(self.trickle())
            elif stream:
                self.transport.write(_head("200 OK", "text/event-stream", None) + b"".join(self.answers.stream_chunks))
            else:
                body_out = self.answers.json_body
                self.transport.write(_head("200 OK", "application/json", len(body_out)) + body_out)
        else:
            self.transport.write(_head("404 Not Found", "application/json", 2) + b"{}")

    async def trickle(self) -> None:
        """The stream one chunk per `token_delay_s` (requests on one connection are sequential)."""
        self.transport.write(_head("200 OK", "text/event-stream", None))
        for chunk in self.answers.stream_chunks:
            await asyncio.sleep(self.token_delay_s)
            if self.transport.is_closing():
                return
            self.transport.write(chunk)


async def serve(host: str, port: int, tokens: int, token_delay_s: float = 0.0) -> None:
    answers = FakeAnswers(tokens)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: FakeUpstreamProtocol(answers, token_delay_s), host, port, backlog=1024)
    async with server:
        await server.serve_forever()


@contextlib.contextmanager
def running(*, tokens: int = 8, cores: list[int] | None = None) -> Iterator[tuple[int, int]]:
    """The fake in a child process on a free local port, pinned to `cores` if given: (port, pid)."""
    from benchmarks.resources import free_port  # noqa: PLC0415 - the server itself needs neither
    from gateway.process import running as child_running  # noqa: PLC0415

    port = free_port()
    argv = [sys.executable, "-m", "benchmarks.fake_upstream", "--port", str(port), "--tokens", str(tokens)]
    with child_running(argv, url=f"http://127.0.0.1:{port}/health", deadline_s=30, cores=cores) as child:
        yield port, child.pid


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=8, help="tokens per answer (SSE chunks when streaming)")
    parser.add_argument("--token-delay-ms", type=float, default=0.0, help="pause before each streamed chunk")
    args = parser.parse_args(argv)
    try:
        import uvloop  # noqa: PLC0415 - optional: the fake should be as cheap as it can be

        run: Callable[..., None] = uvloop.run
    except ImportError:
        run = asyncio.run
    with contextlib.suppress(KeyboardInterrupt):
        run(serve(args.host, args.port, args.tokens, args.token_delay_ms / 1000))


if __name__ == "__main__":
    main()
