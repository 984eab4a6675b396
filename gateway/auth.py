"""Optional API-key authentication, as pure ASGI middleware.

    keys = load_api_keys(env_var="GATEWAY_API_KEYS", file=None)   # empty: auth disabled
    app.add_middleware(ApiKeyMiddleware, keys=keys)

Every route needs `Authorization: Bearer <key>` except the liveness/readiness probes and the
static web page (its HTML and scripts hold no data; the page then asks for a key). Keys are
compared in constant time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress
import os
from pathlib import Path

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.errors import ConfigError, Unauthorized, render_error

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


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and "localhost"; any other name or address may be reachable from outside."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def exposure_check(*, host: str, keys: list[str], env_var: str, allow_unauthenticated: bool) -> str:
    """Closed by default: the one line to log about authentication at startup, or ConfigError
    when the gateway would serve a non-loopback address with no key and nobody opted out."""
    if keys:
        return f"auth is on: {len(keys)} API key(s); every route but the probes and the page needs one"
    if is_loopback(host):
        return f"auth is off: no API key configured ({env_var} / gateway.api_keys_file); listening on loopback only"
    if allow_unauthenticated:
        return f"WARNING: auth is off on {host} (gateway.allow_unauthenticated): anyone who reaches it can use it"
    raise ConfigError(
        f"gateway.host {host} is not a loopback address and no API key is configured: set {env_var} "
        "(comma-separated keys) or gateway.api_keys_file (one key per line), or, to serve without "
        "authentication on purpose, set gateway.allow_unauthenticated: true (server.py --allow-unauthenticated)"
    )


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
        await render_error(error, scope)(scope, receive, send)

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
