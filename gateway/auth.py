"""Optional API-key authentication, as pure ASGI middleware.

    keys = load_api_keys(env_var="GATEWAY_API_KEYS", file=None)   # empty: auth disabled
    app.add_middleware(ApiKeyMiddleware, keys=keys)

Every route needs `Authorization: Bearer <key>` except the liveness/readiness probes and the
static web page (its HTML and scripts hold no data; the page then asks for a key). Keys are
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import json
import os
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ConfigError, Unauthorized

OPEN_PATHS = frozenset({"/health", "/ready", "/", "/favicon.ico"})
OPEN_PREFIXES = ("/static/",)


def load_api_keys(*, env_var: str, file: str | None) -> list[str]:
    keys = [k.strip() for k in os.environ.get(env_var, "").split(",") if k.strip()]
    if file:
        try:
            lines = Path(file).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"gateway.api_keys_file: cannot read {file}: {exc.strerror}") from exc
        keys += [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    return keys


class ApiKeyMiddleware:
    def __init__(self, app: ASGIApp, *, keys: list[str]) -> None:
        self.app = app
        self._keys = [k.encode() for k in keys]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._keys or self._is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        if self._authorized(scope):
            await self.app(scope, receive, send)
            return
        error = Unauthorized("Missing or invalid API key: send 'Authorization: Bearer <key>'.")
        body = json.dumps(error.to_body()).encode()
        await send(
            {
                "type": "http.response.start",
                "status": error.status_code,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    @staticmethod
    def _is_open(path: str) -> bool:
        return path in OPEN_PATHS or path.startswith(OPEN_PREFIXES)

    def _authorized(self, scope: Scope) -> bool:
        header = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, token = header.partition(b" ")
        if scheme.lower() != b"bearer" or not token:
            return False
        # Compare against every key so the time taken does not depend on which one matched.
        matches = [hmac.compare_digest(token.strip(), key) for key in self._keys]
        return any(matches)
