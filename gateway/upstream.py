"""The data-path HTTP client to the engines: one POST, its status, headers and body.

    upstream = AiohttpUpstream(connect_timeout_s=5)      # production: aiohttp's C parser, pooled
    upstream = HttpxUpstream(httpx.AsyncClient(transport=httpx.MockTransport(fake)))  # unit tests
    response = await upstream.request("POST", url, body, headers, engine="r1-tiny")
    try:
        async for chunk in response.chunks(): ...         # or: await response.read()
    finally:
        response.close_now()                              # unread: closes the connection

Every request the gateway proxies crosses this module, so it is the one place where speed
matters most: httpx + httpcore + anyio cost about half of the gateway's time per request
(py-spy, results/bench/gateway), aiohttp a fraction of that. Closing a response that was not
read to the end closes its TCP connection, which is how vLLM learns to abort a generation.

Transport failures become gateway errors here and nowhere else on the data path:
could not connect -> EngineUnavailable (503, retried on another replica by the proxy), the
connection dropped -> UpstreamError (502). Timeouts are the proxy's (`asyncio.timeout`).

Pooled connections and the engine's keep-alive. vLLM's server closes a connection that has been
idle for VLLM_HTTP_TIMEOUT_KEEP_ALIVE seconds (5 by default). A client that reuses a pooled
connection just as the engine closes it sees "Can not write request body" or "Server
disconnected" although the engine is fine: a CI run failed on exactly that, and the dispatcher then
took the healthy replica out of rotation. Two defences: the pool drops its own idle connections
after POOL_KEEPALIVE_S, before the engine would (aiohttp checks the age when it hands one out);
and a request whose connection closed before any answer came is sent once more on a new
connection (aiohttp itself retries only idempotent methods; here nothing reached a live handler,
and the dispatcher's retry on another replica resends the same body anyway). Only if that fresh
connection fails too is the engine unavailable.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Protocol

import aiohttp
import httpx

from gateway.errors import EngineUnavailable, UpstreamError, map_httpx_errors

_HOP_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive", "content-encoding"})


def passthrough_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The engine's response headers, lower-cased, minus the hop-by-hop ones the gateway sets itself."""
    return {name: v for k, v in headers.items() if (name := k.lower()) not in _HOP_HEADERS}


class UpstreamResponse(Protocol):
    status: int
    headers: dict[str, str]  # lower-cased names, without hop-by-hop headers

    async def read(self) -> bytes: ...

    def chunks(self) -> AsyncIterator[bytes]: ...

    def close_now(self) -> None:
        """Give the connection back if the body was read to the end, else drop it. Synchronous,
        so that it also runs on a cancellation path; safe to call more than once."""
        ...


class Upstream(Protocol):
    async def request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], *, engine: str
    ) -> UpstreamResponse:
        """Send (a JSON body, if any); return once the status line and headers are in."""
        ...

    async def aclose(self) -> None: ...


# --- aiohttp: the production client ---------------------------------------------------------


class _AiohttpResponse:
    def __init__(self, response: aiohttp.ClientResponse, engine: str) -> None:
        self._response = response
        self._engine = engine
        self.status = response.status
        self.headers = passthrough_headers(response.headers)

    async def read(self) -> bytes:
        try:
            return await self._response.read()
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise UpstreamError(f"Engine '{self._engine}' dropped the connection: {exc}") from exc
        finally:
            self._response.release()

    async def chunks(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_any():
                yield chunk
        except (aiohttp.ClientPayloadError, aiohttp.ClientConnectionError) as exc:
            raise UpstreamError(f"Engine '{self._engine}' dropped the connection: {exc}") from exc

    def close_now(self) -> None:
        if self._response.content.at_eof():
            self._response.release()  # read to the end: the connection goes back to the pool
        else:
            self._response.close()  # not finished: drop the connection so the engine aborts


ENGINE_KEEPALIVE_S = 5  # vLLM's VLLM_HTTP_TIMEOUT_KEEP_ALIVE default (uvicorn's timeout_keep_alive)
POOL_KEEPALIVE_S = 3.0  # below it, so an idle pooled connection is dropped here first


class AiohttpUpstream:
    def __init__(
        self,
        *,
        connect_timeout_s: float,
        keepalive_s: float = POOL_KEEPALIVE_S,
        on_resend: Callable[[str], None] | None = None,
    ) -> None:
        # Per-request deadlines are the proxy's; only connecting has its own limit here.
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s)
        options: dict[str, Any] = {
            "timeout": timeout,
            "auto_decompress": False,
            "skip_auto_headers": ("User-Agent", "Accept-Encoding"),
        }
        pooled = aiohttp.TCPConnector(limit=0, limit_per_host=0, keepalive_timeout=keepalive_s, ttl_dns_cache=300)
        self._session = aiohttp.ClientSession(connector=pooled, **options)
        # The second try after a connection closed under a request: always a new connection.
        fresh = aiohttp.TCPConnector(limit=0, limit_per_host=0, force_close=True, ttl_dns_cache=300)
        self._fresh_session = aiohttp.ClientSession(connector=fresh, **options)
        # Told the model's name of each request sent again after its connection closed unanswered
        # (the app counts them in gateway_upstream_resent).
        self._on_resend = on_resend

    async def request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], *, engine: str
    ) -> _AiohttpResponse:
        if body is not None:
            headers = {"Content-Type": "application/json", **headers}
        try:
            response = await self._send(method, url, body, headers, engine)
        except (aiohttp.ClientConnectorError, aiohttp.ConnectionTimeoutError) as exc:
            raise EngineUnavailable(f"Engine '{engine}' is not reachable: {exc}", retry_after=5) from exc
        except aiohttp.ClientConnectionError as exc:
            # Closed again on a new connection (the engine is going down): nothing reached a
            # live handler, so the request may go to another replica like a failed connect.
            raise EngineUnavailable(f"Engine '{engine}' closed the connection: {exc}", retry_after=5) from exc
        except aiohttp.ClientError as exc:
            raise UpstreamError(f"Engine '{engine}' sent an invalid response: {exc}") from exc
        return _AiohttpResponse(response, engine)

    async def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], engine: str
    ) -> aiohttp.ClientResponse:
        """On the pool; once more on a new connection if the pooled one closed before any answer."""
        try:
            return await self._session.request(method, url, data=body, headers=headers)
        except aiohttp.ClientConnectorError:
            raise  # could not connect at all: nothing to resend on
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError):
            # closed under the request (see the module docstring)
            if self._on_resend is not None:
                self._on_resend(engine)
            return await self._fresh_session.request(method, url, data=body, headers=headers)

    async def aclose(self) -> None:
        await self._session.close()
        await self._fresh_session.close()


# --- httpx: for an injected transport (unit tests against a FAKE upstream) ----------------


class _HttpxResponse:
    def __init__(self, response: httpx.Response, engine: str) -> None:
        self._response = response
        self._engine = engine
        self._closing: asyncio.Task[None] | None = None
        self.status = response.status_code
        self.headers = passthrough_headers(response.headers)

    async def read(self) -> bytes:
        try:
            with map_httpx_errors(self._engine):
                return await self._response.aread()
        finally:
            await self._response.aclose()

    async def chunks(self) -> AsyncIterator[bytes]:
        with map_httpx_errors(self._engine):
            if self._response.is_stream_consumed:  # a fake that answered with a whole body
                yield self._response.content
                return
            async for chunk in self._response.aiter_raw():
                yield chunk

    def close_now(self) -> None:
        if not self._response.is_closed and self._closing is None:
            self._closing = asyncio.get_running_loop().create_task(self._response.aclose())


class HttpxUpstream:
    """The same contract over an httpx client, so in-process tests can use httpx.MockTransport."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self._client = client

    async def request(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], *, engine: str
    ) -> _HttpxResponse:
        if body is not None:
            headers = {"Content-Type": "application/json", **headers}
        request = self._client.build_request(method, url, content=body, headers=headers)
        with map_httpx_errors(engine):
            return _HttpxResponse(await self._client.send(request, stream=True), engine)

    async def aclose(self) -> None:
        """The client belongs to the caller."""
