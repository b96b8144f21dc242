"""A JSON-RPC client for the management port: used by ``lbmgmt call`` and lb-console.

Any JSON-RPC 2.0 client works against the port; this one adds the errors a
person can act on (cannot connect, login refused, locked out) as exceptions.
"""

from __future__ import annotations

import base64
import itertools
import ssl
from types import TracebackType
from typing import Any

import aiohttp


class ManagementUnavailable(Exception):
    """Could not reach the port, or it answered something that is not JSON-RPC."""


class AuthFailed(ManagementUnavailable):
    """Credentials missing or refused (401), or locked out after failures (429)."""


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{message} ({code})")
        self.code = code
        self.message = message
        self.data = data

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.data is not None:
            out["data"] = self.data
        return out


def endpoint_url(address: str, *, tls: bool = False) -> str:
    if address.startswith(("http://", "https://")):
        return address.rstrip("/") + ("" if address.rstrip("/").endswith("/jsonrpc")
                                       else "/jsonrpc")
    return f"{'https' if tls else 'http'}://{address}/jsonrpc"


class ManagementClient:
    def __init__(self, address: str, *, user: str | None = None, password: str | None = None,
                 token: str | None = None, tls: bool = False, cafile: str | None = None,
                 insecure: bool = False, timeout: float = 10.0) -> None:
        self.url = endpoint_url(address, tls=tls)
        self.address = address
        headers = {}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        elif user is not None:
            pair = base64.b64encode(f"{user}:{password or ''}".encode()).decode()
            headers["Authorization"] = f"Basic {pair}"
        ssl_option: ssl.SSLContext | bool = True
        if self.url.startswith("https://"):
            if insecure:
                ssl_option = False
            elif cafile:
                ssl_option = ssl.create_default_context(cafile=cafile)
        self._headers = headers
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._ssl = ssl_option
        self._session: aiohttp.ClientSession | None = None
        self._ids = itertools.count(1)

    async def __aenter__(self) -> ManagementClient:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def _post(self, payload: Any, timeout: float | None = None) -> Any:
        if self._session is None:
            self._session = aiohttp.ClientSession(headers=self._headers, timeout=self._timeout)
        kwargs: dict[str, Any] = {"json": payload, "ssl": self._ssl}
        if timeout is not None:
            kwargs["timeout"] = aiohttp.ClientTimeout(total=timeout)
        try:
            async with self._session.post(self.url, **kwargs) as resp:
                if resp.status == 401:
                    raise AuthFailed(f"{self.address}: login required or refused")
                if resp.status == 429:
                    raise AuthFailed(f"{self.address}: too many failed logins, retry after "
                                     f"{resp.headers.get('Retry-After', '?')} s")
                if resp.status == 204:
                    return None
                if resp.status != 200:
                    raise ManagementUnavailable(f"{self.address}: HTTP {resp.status}")
                return await resp.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            if isinstance(exc, aiohttp.ClientConnectorSSLError | aiohttp.ClientSSLError):
                raise ManagementUnavailable(
                    f"{self.address}: TLS failed ({exc}); if the port speaks plain HTTP, "
                    "use http:// (or leave --tls out)") from None
            if isinstance(exc, aiohttp.ClientConnectorError):
                raise ManagementUnavailable(f"cannot connect to {self.address}: "
                                            f"{exc.os_error.strerror or exc}") from None
            if (isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientOSError)
                    and self.url.startswith("http://")):
                raise ManagementUnavailable(
                    f"{self.address}: {exc or type(exc).__name__}: the port closed the "
                    "connection without an answer: if it speaks HTTPS (tls_cert_file), "
                    "add --tls") from None
            raise ManagementUnavailable(f"{self.address}: {type(exc).__name__}: {exc}") from None

    @staticmethod
    def _result(answer: Any) -> Any:
        if not isinstance(answer, dict):
            raise ManagementUnavailable("not a JSON-RPC response")
        if "error" in answer:
            err = answer["error"]
            raise RpcError(err.get("code", 0), err.get("message", ""), err.get("data"))
        return answer.get("result")

    async def call(self, method: str, params: Any = None, *, timeout: float | None = None
                   ) -> Any:
        request: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": next(self._ids)}
        if params is not None:
            request["params"] = params
        return self._result(await self._post(request, timeout))

    async def batch(self, calls: list[tuple[str, Any]]) -> list[Any]:
        """Results in order; an element that failed is its RpcError (not raised)."""
        first = next(self._ids)
        requests = [{"jsonrpc": "2.0", "method": m, "params": p, "id": first + i}
                    for i, (m, p) in enumerate(calls)]
        for _ in calls[1:]:
            next(self._ids)
        answers = await self._post(requests)
        if not isinstance(answers, list):
            raise ManagementUnavailable("not a JSON-RPC batch response")
        by_id = {a.get("id"): a for a in answers if isinstance(a, dict)}
        out: list[Any] = []
        for request in requests:
            try:
                out.append(self._result(by_id.get(request["id"])))
            except RpcError as exc:
                out.append(exc)
        return out

    # JMX-flavoured shortcuts
    async def get(self, name: str, attribute: str) -> Any:
        return await self.call("getAttribute", [name, attribute])

    async def set(self, name: str, attribute: str, value: Any) -> Any:
        return await self.call("setAttribute", [name, attribute, value])

    async def invoke(self, name: str, operation: str, params: list[Any] | None = None) -> Any:
        return await self.call("invoke", [name, operation, params or []])
