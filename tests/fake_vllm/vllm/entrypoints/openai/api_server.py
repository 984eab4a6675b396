"""A FAKE `vllm.entrypoints.openai.api_server` for supervisor unit tests (no model, no vLLM).

Put tests/fake_vllm on PYTHONPATH and the supervisor's real argv starts this instead.
It accepts vLLM's flags, spawns a child process (as vLLM's engine core does), and serves
`GET /health`. FAKE_ENGINE_MODE=crash exits at once with an error; =hang never becomes healthy;
=stubborn ignores SIGTERM (so only SIGKILL stops it).
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import subprocess
import sys
import time


class Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # http.server dispatches on this name
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args, _ = parser.parse_known_args()
    mode = os.environ.get("FAKE_ENGINE_MODE", "serve")
    print(f"fake engine pid={os.getpid()} mode={mode} argv={sys.argv[1:]}", flush=True)
    if mode == "crash":
        print("ValueError: fake engine cannot load model", flush=True)
        sys.exit(3)
    if mode == "stubborn":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    print(f"fake engine child pid={child.pid}", flush=True)
    if mode == "hang":
        time.sleep(3600)
    http.server.ThreadingHTTPServer((args.host, args.port), Health).serve_forever()


if __name__ == "__main__":
    main()
