"""A FAKE `vllm.entrypoints.openai.api_server` for supervisor and server tests (no model, no vLLM).

Put tests/fake_vllm on PYTHONPATH and the supervisor's real argv starts this instead.
It accepts vLLM's flags, spawns a child process (as vLLM's engine core does), and serves
`GET /health`, `GET /v1/models` and a slow streamed `POST /v1/chat/completions` (one chunk
every FAKE_TOKEN_DELAY_S, default 0.2 s, `max_tokens` of them, then `[DONE]`).
FAKE_ENGINE_MODE=crash exits at once with an error; =hang never becomes healthy; =stubborn
ignores SIGTERM (so only SIGKILL stops it). FAKE_KV_TOKENS=N logs vLLM's KV cache line.
"""

from __future__ import annotations

import argparse
import http.server
import json
import os
import signal
import subprocess
import sys
import time


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    served_name = "fake"

    def do_GET(self) -> None:  # http.server dispatches on this name
        if self.path == "/health":
            self._send(200, b"")
        elif self.path == "/v1/models":
            self._send(200, json.dumps({"object": "list", "data": [{"id": self.served_name}]}).encode())
        else:
            self._send(404, b"{}")

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", "0"))) or b"{}")
        if self.path != "/v1/chat/completions" or not body.get("stream"):
            self._send(404, b"{}")
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()
        delay = float(os.environ.get("FAKE_TOKEN_DELAY_S", "0.2"))
        for i in range(int(body.get("max_tokens", 5))):
            time.sleep(delay)
            chunk = {"id": "fake", "model": self.served_name, "choices": [{"index": 0, "delta": {"content": f"t{i} "}}]}
            self._chunk(f"data: {json.dumps(chunk)}\n\n".encode())
        self._chunk(b"data: [DONE]\n\n")
        self._chunk(b"")

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    def _send(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--served-model-name", default="fake")
    args, _ = parser.parse_known_args()
    Handler.served_name = args.served_model_name
    mode = os.environ.get("FAKE_ENGINE_MODE", "serve")
    print(f"fake engine pid={os.getpid()} mode={mode} argv={sys.argv[1:]}", flush=True)
    if mode == "crash":
        print("ValueError: fake engine cannot load model", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    print(f"fake engine child pid={child.pid}", flush=True)
    if "FAKE_KV_TOKENS" in os.environ:
        print(f"INFO [kv_cache_utils.py] CPU KV cache size: {int(os.environ['FAKE_KV_TOKENS']):,} tokens", flush=True)
    if mode == "hang":
        time.sleep(3600)
    http.server.ThreadingHTTPServer((args.host, args.port), Handler).serve_forever()


if __name__ == "__main__":
    main()
