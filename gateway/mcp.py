"""The gateway as a client of remote MCP servers: list a server's tools and call them, for ``mcp`` tools.

A small JSON-RPC client over the streamable HTTP transport (and the older HTTP+SSE one, for a ``server_url``
whose path ends in ``/sse``), on ``requests``: the official SDK's client is asyncio, which does not run
inside a gevent worker's greenlets, and the few messages the gateway needs (``initialize``, ``tools/list``,
``tools/call``) do not need it. Its own server is what the tests talk to.

Every exchange is bounded: ``mcp_timeout`` for each message (a server that hangs ends the wait), and
``mcp_max_result_bytes`` for each answer, read in pieces (a server that answers 50 MB is cut off, not held).
Only hosts the operator lists in ``mcp_hosts`` are called; the address is checked on the connected socket
itself, so a name that resolves to a private address later (DNS rebinding) is still refused. Redirects are
never followed. A session belongs to one create: nothing is shared between tenants or requests.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import ipaddress
import time
import urllib.parse
from collections.abc import Iterator
from typing import Any

import orjson
import requests
import urllib3
from requests.adapters import HTTPAdapter

from . import greenlets, sse

PROTOCOL_VERSION = "2025-06-18"
_ACCEPT = "application/json, text/event-stream"


class McpFailure(Exception):
    """An MCP server could not be reached or answered wrongly; ``error`` is the item's ``error`` object."""

    def __init__(self, message: str, *, kind: str = "http_error", code: int = 0):
        super().__init__(message)
        self.message = message
        self.error = {"type": kind, "code": code, "message": message}


class Refused(McpFailure):
    """The server's host or address is not one the operator allows."""

    def __init__(self, message: str):
        super().__init__(message, code=403)


@dataclasses.dataclass(frozen=True)
class HostPolicy:
    """``mcp_hosts``: names (``mcp.example.com``), wildcards (``*.example.com``), addresses and networks.

    A server's host must be listed: a name by name or wildcard, an address (in the URL) inside a listed
    address or network. Nothing listed: nothing is reached. Whatever a listed name resolves to, the
    connection is kept only to a public address, or to one inside a listed address or network: a private
    or loopback server is reached only when its address is listed. An IPv6 address that carries an IPv4
    one (mapped, 6to4, Teredo, NAT64) is judged by the IPv4 address it leads to.
    """

    names: frozenset[str] = frozenset()
    wildcards: tuple[str, ...] = ()
    networks: tuple[Any, ...] = ()

    @classmethod
    def of(cls, entries: list[str]) -> HostPolicy:
        names, wildcards, networks = set(), [], []
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                if "*" in entry:
                    wildcards.append(entry.lower().rstrip("."))
                else:
                    names.add(entry.lower().rstrip("."))
        return cls(frozenset(names), tuple(wildcards), tuple(networks))

    def host_allowed(self, host: str) -> bool:
        host = host.lower().strip("[]").rstrip(".")
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return host in self.names or any(fnmatch.fnmatchcase(host, w) for w in self.wildcards)
        return self._listed(address)

    def address_allowed(self, address: Any) -> bool:
        if self._listed(address):
            return True
        carried = _carried(address)
        return address.is_global and (carried is None or carried.is_global)

    def _listed(self, address: Any) -> bool:
        carried = _carried(address)
        return any(address in n or (carried is not None and carried in n) for n in self.networks)


_NAT64 = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_COMPATIBLE = ipaddress.ip_network("::/96")


def _carried(address: Any) -> Any:
    """The IPv4 address an IPv6 one leads to (mapped, 6to4, Teredo's client, NAT64, IPv4-compatible), or None."""
    if address.version != 6:
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in n for n in _NAT64) or address in _COMPATIBLE:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


class _Checked:
    """A connection that keeps its socket only when the address it reached is one the policy allows."""

    policy: HostPolicy

    def _new_conn(self) -> Any:
        # The host this connection dials (whatever a URL parser made of the URL), then the address it reached.
        if not self.policy.host_allowed(self.host):  # type: ignore[attr-defined]
            raise Refused(f"the MCP server's host {self.host!r} is not in the gateway's mcp_hosts")  # type: ignore[attr-defined]
        sock = super()._new_conn()  # type: ignore[misc]
        peer = sock.getpeername()[0]
        if not self.policy.address_allowed(ipaddress.ip_address(peer.split("%")[0])):
            sock.close()
            raise Refused("the address the MCP server's name resolved to is not one the gateway's mcp_hosts allow")
        return sock


class _Adapter(HTTPAdapter):
    def __init__(self, policy: HostPolicy):
        self._policy = policy
        super().__init__(pool_connections=1, pool_maxsize=2, max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        policy = self._policy
        http = type("CheckedHTTP", (_Checked, urllib3.connection.HTTPConnection), {"policy": policy})
        https = type("CheckedHTTPS", (_Checked, urllib3.connection.HTTPSConnection), {"policy": policy})
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("CheckedHTTPPool", (urllib3.HTTPConnectionPool,), {"ConnectionCls": http}),
            "https": type("CheckedHTTPSPool", (urllib3.HTTPSConnectionPool,), {"ConnectionCls": https}),
        }
        self.poolmanager.key_fn_by_scheme = dict(self.poolmanager.key_fn_by_scheme)


@dataclasses.dataclass(frozen=True)
class Limits:
    policy: HostPolicy
    timeout: float  # seconds for one message's answer
    max_bytes: int  # the most one answer may hold


class Session:
    """One MCP session with one server, opened for one create and closed at its end."""

    def __init__(self, url: str, headers: dict[str, str], limits: Limits):
        parts = check_url(url)
        if not limits.policy.host_allowed(parts.hostname or ""):
            raise Refused(f"the MCP server's host {parts.hostname!r} is not in the gateway's mcp_hosts")
        self.url, self.limits = url, limits
        self._http = requests.Session()
        self._http.trust_env = False  # a proxy from the environment would connect in the policy's place
        adapter = _Adapter(limits.policy)
        self._http.mount("http://", adapter)
        self._http.mount("https://", adapter)
        self._headers = {**headers, "Content-Type": "application/json", "Accept": _ACCEPT}
        self._next_id = 0
        self._session_id: str | None = None
        self._events: Iterator[sse.Event] | None = None  # the HTTP+SSE transport's one stream of answers
        self._stream: requests.Response | None = None
        self._post_url = url
        self._started = False
        self._window = {"deadline": 0.0, "size": 0}  # the HTTP+SSE stream's bounds, renewed for each answer

    # -- the three messages ------------------------------------------------------------------------------

    def list_tools(self) -> list[dict]:
        self._start()
        tools: list[dict] = []
        cursor = None
        deadline = time.monotonic() + self.limits.timeout  # the whole listing, every page, in one mcp_timeout
        for _ in range(100):  # pages, bounded: a server that pages forever is cut off
            result = self._rpc("tools/list", {"cursor": cursor} if cursor else {}, deadline=deadline)
            tools.extend(t for t in result.get("tools") or [] if isinstance(t, dict) and isinstance(t.get("name"), str))
            cursor = result.get("nextCursor")
            if not cursor:
                break
        return tools

    def call_tool(self, name: str, arguments: dict) -> dict:
        self._start()
        return self._rpc("tools/call", {"name": name, "arguments": arguments})

    def close(self) -> None:
        try:
            if self._session_id is not None and self._events is None:
                with _bounded(1.0, 1.0):
                    self._http.delete(self.url, headers=self._session_headers(), timeout=1, allow_redirects=False)
        except (requests.RequestException, McpFailure):
            pass  # the server ends an idle session itself
        finally:
            if self._stream is not None:
                self._stream.close()
            self._http.close()

    # -- the transport -----------------------------------------------------------------------------------

    def _start(self) -> None:
        if self._started:
            return
        self._started = True
        if urllib.parse.urlsplit(self.url).path.rstrip("/").endswith("/sse"):
            self._open_sse()
        params = {
            "protocolVersion": PROTOCOL_VERSION,
            "capabilities": {},
            "clientInfo": {"name": "ai-gateway", "version": "1"},
        }
        result = self._rpc("initialize", params)
        self._version = result.get("protocolVersion") or PROTOCOL_VERSION
        self._rpc("notifications/initialized", None, notify=True)

    def _session_headers(self) -> dict[str, str]:
        headers = dict(self._headers)
        if self._session_id:
            headers["Mcp-Session-Id"] = self._session_id
        if getattr(self, "_version", None):
            headers["MCP-Protocol-Version"] = self._version
        return headers

    def _post(self, payload: dict) -> requests.Response:
        return self._send("POST", self._post_url, self._session_headers(), orjson.dumps(payload))

    def _send(self, method: str, url: str, headers: dict[str, str], data: bytes | None = None) -> requests.Response:
        """One request, its body left to stream; raises McpFailure for a failure, a redirect or an error status."""
        try:
            resp = self._http.request(
                method,
                url,
                data=data,
                headers=headers,
                timeout=(min(5.0, self.limits.timeout), self.limits.timeout),
                stream=True,
                allow_redirects=False,
            )
        except McpFailure:
            raise
        except requests.RequestException as exc:
            raise _failure(exc, self.limits.timeout) from None
        if 300 <= resp.status_code < 400:
            resp.close()
            raise McpFailure(
                f"the MCP server redirected (HTTP {resp.status_code}); redirects are not followed",
                code=resp.status_code,
            )
        if resp.status_code >= 400:
            resp.close()
            raise McpFailure(f"the MCP server answered HTTP {resp.status_code}", code=resp.status_code)
        return resp

    def _rpc(self, method: str, params: dict | None, *, notify: bool = False, deadline: float | None = None) -> dict:
        now = time.monotonic()
        deadline = min(deadline, now + self.limits.timeout) if deadline is not None else now + self.limits.timeout
        with _bounded(deadline - now, self.limits.timeout):
            return self._exchange(method, params, notify, deadline)

    def _exchange(self, method: str, params: dict | None, notify: bool, deadline: float) -> dict:
        payload: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
        if params is not None:
            payload["params"] = params
        if not notify:
            self._next_id += 1
            payload["id"] = self._next_id
        self._window.update(deadline=deadline, size=0)
        resp = self._post(payload)
        if method == "initialize" and resp.headers.get("Mcp-Session-Id"):
            self._session_id = resp.headers["Mcp-Session-Id"]
        if notify:
            resp.close()
            return {}
        if self._events is not None:  # HTTP+SSE: the answer comes on the stream opened first
            resp.close()
            return self._answer(self._events, payload["id"], deadline)
        kind = resp.headers.get("Content-Type", "").split(";")[0].strip().lower()
        try:
            if kind == "text/event-stream":
                window = {"deadline": deadline, "size": 0}
                return self._answer(sse.iter_events(self._read(resp, window)), payload["id"], deadline)
            body = b"".join(self._read(resp, {"deadline": deadline, "size": 0}))
        finally:
            resp.close()
        return _result(_parsed(body), payload["id"])

    def _answer(self, events: Iterator[sse.Event], wanted: int, deadline: float) -> dict:
        for event in events:
            if time.monotonic() > deadline:
                raise _timed_out(self.limits.timeout)
            message = event.json()
            if isinstance(message, dict) and message.get("id") == wanted:
                return _result(message, wanted)
        raise McpFailure("the MCP server ended its stream without an answer", kind="mcp_protocol_error", code=-32603)

    def _read(self, resp: requests.Response, window: dict) -> Iterator[bytes]:
        """The body in pieces, within the window's deadline and the size limit (an HTTP+SSE stream's window
        is renewed for each answer it carries).
        """
        raw = resp.raw
        try:
            while True:
                # read1: what one read of the socket gives, so the deadline is looked at after each, however
                # slowly the server sends (a 64 KiB read would wait for all of it, a socket timeout per read).
                chunk = raw.read1(65536)
                if not chunk:
                    return
                window["size"] += len(chunk)
                if window["size"] > self.limits.max_bytes:
                    raise McpFailure(
                        f"the MCP server's answer is larger than the gateway's mcp_max_result_bytes "
                        f"({self.limits.max_bytes})",
                        code=413,
                    )
                if time.monotonic() > window["deadline"]:
                    raise _timed_out(self.limits.timeout)
                yield chunk
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            raise _failure(exc, self.limits.timeout) from None

    def _open_sse(self) -> None:
        """The HTTP+SSE transport: a GET stream whose first event names where to POST messages."""
        with _bounded(self.limits.timeout, self.limits.timeout):
            self._open_sse_within(time.monotonic() + self.limits.timeout)

    def _open_sse_within(self, deadline: float) -> None:
        self._window.update(deadline=deadline, size=0)
        resp = self._send("GET", self.url, {**self._headers, "Accept": "text/event-stream"})
        if resp.status_code != 200:
            resp.close()
            raise McpFailure(f"the MCP server answered HTTP {resp.status_code}", code=resp.status_code)
        self._stream = resp
        self._events = sse.iter_events(self._read(resp, self._window))
        for event in self._events:
            if time.monotonic() > deadline:
                raise _timed_out(self.limits.timeout)
            if event.event == "endpoint" and event.data:
                target = urllib.parse.urljoin(self.url, event.data.strip())
                here, there = urllib.parse.urlsplit(self.url), urllib.parse.urlsplit(target)
                if (there.scheme, there.netloc) != (here.scheme, here.netloc):
                    raise Refused("the MCP server named a message endpoint on another host")
                self._post_url = target
                return
        raise McpFailure("the MCP server's event stream ended before naming its endpoint", code=502)


def check_url(url: str) -> urllib.parse.SplitResult:
    """``url`` split, if it is one the gateway calls: http(s), a host, no credentials in it, nothing two URL
    parsers could read as two hosts.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname
        parts.port  # noqa: B018 - raises for a port that is not one
    except ValueError:
        raise McpFailure("the MCP server_url is not a URL", code=400) from None
    if parts.scheme not in ("http", "https") or not host:
        raise McpFailure("the MCP server_url must be an http or https URL", code=400)
    if "@" in parts.netloc or "\\" in url or any(c in url for c in "\r\n\t "):
        raise McpFailure("the MCP server_url must not carry credentials (send headers or authorization)", code=400)
    return parts


def _parsed(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise McpFailure("the MCP server's answer is not JSON", kind="mcp_protocol_error", code=-32700) from None


def _result(message: Any, wanted: int) -> dict:
    if isinstance(message, list):  # a batch: the one answer this request is owed
        message = next((m for m in message if isinstance(m, dict) and m.get("id") == wanted), None)
    if not isinstance(message, dict):
        raise McpFailure("the MCP server's answer is not a JSON-RPC message", kind="mcp_protocol_error", code=-32600)
    error = message.get("error")
    if isinstance(error, dict):
        code = error.get("code") if isinstance(error.get("code"), int) else -32603
        raise McpFailure(str(error.get("message") or "error"), kind="mcp_protocol_error", code=code)
    result = message.get("result")
    if not isinstance(result, dict):
        raise McpFailure("the MCP server's answer has no result", kind="mcp_protocol_error", code=-32603)
    return result


@contextlib.contextmanager
def _bounded(seconds: float, said: float) -> Iterator[None]:
    """At most ``seconds`` of wall-clock time for what runs inside, under gevent (a server that sends a byte
    just before each read times out would otherwise hold the greenlet): a socket timeout bounds one read only.
    Under threads, the reads' own checks of the deadline bound it to about twice ``mcp_timeout``.
    """
    if not greenlets.active():
        yield
        return
    import gevent  # only under gevent workers

    timeout = gevent.Timeout(max(seconds, 0.001), _timed_out(said))
    timeout.start()
    try:
        yield
    finally:
        timeout.cancel()


def _timed_out(seconds: float) -> McpFailure:
    return McpFailure(f"the MCP server did not answer within the gateway's mcp_timeout ({seconds:g} s)", code=504)


def _failure(exc: BaseException, seconds: float) -> McpFailure:
    for cause in _causes(exc):
        if isinstance(cause, McpFailure):
            return cause
    if any(isinstance(c, requests.Timeout | urllib3.exceptions.TimeoutError | TimeoutError) for c in _causes(exc)):
        return _timed_out(seconds)
    return McpFailure(f"the MCP server could not be reached ({type(exc).__name__})", code=502)


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    seen = 0
    while exc is not None and seen < 10:
        yield exc
        for arg in getattr(exc, "args", ()):
            if isinstance(arg, BaseException):
                yield from _causes(arg)
        exc = exc.__cause__ or exc.__context__ or getattr(exc, "reason", None)
        seen += 1


def text_of(result: dict) -> str:
    """A ``tools/call`` result as the model is given it: its text parts, or its JSON."""
    parts = result.get("content")
    if isinstance(parts, list):
        texts = [p.get("text") for p in parts if isinstance(p, dict) and p.get("type") == "text"]
        if texts and all(isinstance(t, str) for t in texts) and len(texts) == len(parts):
            return "\n".join(texts)
        return orjson.dumps(parts).decode()
    return orjson.dumps(result.get("structuredContent")).decode()
