"""The only module that talks HTTP to providers: one pooled requests.Session per worker thread.

Every requests/urllib3 exception is translated here into a GatewayError (timeout 504, anything else 502),
including those raised while a streamed body is being read. In-process answerers (the mock model,
gateway/mock.py, mounted by services.py) serve their URL schemes through a transport adapter, so they take
the same path as the rest.
"""

from __future__ import annotations

import contextlib
import functools
import socket
import ssl
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import requests
import urllib3
import urllib3.exceptions as u3
from requests.adapters import HTTPAdapter
from requests.structures import CaseInsensitiveDict
from requests.utils import get_encoding_from_headers

from .. import greenlets
from ..errors import UpstreamError, UpstreamTimeout
from .connections import _GeventHTTPPool, _GeventHTTPSPool, _HTTPPool, _HTTPSPool
from .local import _LocalAdapter

USER_AGENT = "ai-gateway/0.1"


class UpstreamResponse:
    """A provider's answer: status and headers at once, the body read on demand and bounded."""

    def __init__(self, resp: requests.Response, provider: str, max_bytes: int):
        self._resp = resp
        self.provider = provider
        self.status = resp.status_code
        self.headers = resp.headers
        self._max_bytes = max_bytes
        # The credential the call was made with, so that an error body echoing it can be redacted.
        self.secret: str | None = None

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "").split(";", 1)[0].strip().lower()

    def read(self) -> bytes:
        """The whole body; UpstreamError when it is larger than the limit or the connection breaks."""
        parts = []
        size = 0
        for chunk in self.iter_chunks():
            size += len(chunk)
            if size > self._max_bytes:
                self.close()
                raise UpstreamError(
                    f"The provider '{self.provider}' sent a body larger than {self._max_bytes} bytes.",
                    code="upstream_body_too_large",
                )
            parts.append(chunk)
        self.close()
        return b"".join(parts)

    def iter_chunks(self) -> Iterator[bytes]:
        """Body bytes as they arrive (no waiting for a full buffer: SSE must not be delayed)."""
        raw = self._resp.raw
        try:
            if raw.chunked and raw.supports_chunked_reads():
                yield from raw.read_chunked(65536, decode_content=True)
            else:
                # read() would block until 64 KiB or EOF; read1 returns whatever one recv brings.
                while data := raw.read1(65536, decode_content=True):
                    yield data
        except Exception as exc:  # urllib3 raises its own family here, not requests'
            raise _translate(exc, self.provider, self._resp.url) from None

    def close(self) -> None:
        self._resp.close()

    def abort(self) -> None:
        """Break the connection from another thread or greenlet: a read blocked on it fails at once.

        close() would not wake a thread blocked in recv; shutdown does, under threads and greenlets alike.
        """
        # ValueError/RuntimeError: already released or closed, so nothing is blocked on it.
        with contextlib.suppress(ValueError, RuntimeError, OSError):
            self._resp.raw.shutdown()


class Upstream:
    """Builds and holds the sessions (one per thread; one per process under gevent); the door to every provider."""

    def __init__(
        self,
        *,
        connect_timeout: float,
        read_timeout: float,
        pool_size: int,
        concurrency: int = 1,
        trust_env: bool,
        max_response_bytes: int,
        local: Mapping[str, Callable[[str, str, bytes | None], Any]] | None = None,
    ):
        """``local`` maps URL schemes to in-process answerers (the mock model: ``mock.answer``), mounted on
        every session as transport adapters, the way requests mounts adapters.
        """
        self.timeout = (connect_timeout, read_timeout)
        self._local_answerers = dict(local or {})
        self.pool_size = pool_size
        self.trust_env = trust_env
        self.max_response_bytes = max_response_bytes
        self._local = threading.local()
        # Every thread's session, so that their pooled sockets are closed when this object goes away
        # rather than left for the garbage collector to find open.
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        weakref.finalize(self, _close_all, self._sessions)
        # Under gevent a thread-local is per greenlet, i.e. per request; all greenlets share one OS thread,
        # so one session serves them, its pool as large as the requests in flight so that no call opens a
        # socket of its own. (gunicorn's gevent worker patches before it builds the app, and so this.)
        self._shared = self._new_session(max(pool_size, concurrency)) if greenlets.active() else None

    def close(self) -> None:
        """Close every thread's pooled connections."""
        _close_all(self._sessions)

    def timeout_for(self, seconds: float | None) -> tuple[float, float] | None:
        """(connect, read) timeouts for a call with its own time limit, None for the defaults."""
        if seconds is None:
            return None
        return (min(self.timeout[0], seconds), seconds)

    def session(self) -> requests.Session:
        if self._shared is not None:
            return self._shared
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._new_session(self.pool_size)
        return session

    def _new_session(self, pool_size: int) -> requests.Session:
        session = requests.Session()
        # Proxies and netrc from the environment are opt-in: a gateway's egress should be explicit.
        session.trust_env = self.trust_env
        # requests retries nothing by default; retries are the routing policy's job, not the adapter's.
        adapter = _Adapter(pool_connections=8, pool_maxsize=pool_size, max_retries=0)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        for scheme, answer in self._local_answerers.items():
            session.mount(scheme, _LocalAdapter(answer))
        session.headers["User-Agent"] = USER_AGENT
        with self._lock:
            self._sessions.append(session)
        return session

    def request(
        self,
        provider: str,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str],
        params: Any = None,
        body: bytes | None = None,
        timeout: tuple[float, float] | None = None,
    ) -> UpstreamResponse:
        """Send one request and return once the status line and headers are in.

        Raises UpstreamTimeout (504) or UpstreamError (502) when the provider cannot be reached, and
        UpstreamError when it answers with a redirect: redirects are never followed, so a provider can
        never send the gateway (and the caller's key) to a host the operator did not configure.
        """
        session = self.session()
        try:
            # Straight to the adapter, past Session.request: its settings merge costs more than the rest of
            # the relay, and its cookie jar would carry one tenant's provider cookies into another's calls.
            prepared = requests.PreparedRequest()
            prepared.prepare_method(method)
            # The URL is prepared once per distinct URL and query: requests parses, IDNA-encodes and requotes
            # it on every call otherwise (measured: 32 µs for prepare() against 7 µs without the URL step).
            # Auth, cookies and hooks are left out as before: the gateway sets its auth headers itself, and
            # the adapter uses none of the others.
            prepared.url = _prepared_url(url, _query_key(params))
            prepared.prepare_headers({**session.headers, **headers})
            prepared.prepare_body(body, None)
            proxies = session.merge_environment_settings(url, {}, True, None, None)["proxies"] if self.trust_env else {}
            resp = session.get_adapter(url).send(
                prepared, stream=True, timeout=timeout or self.timeout, verify=True, cert=None, proxies=proxies
            )
        except Exception as exc:
            raise _translate(exc, provider, url) from None
        if resp.is_redirect:
            resp.close()
            raise UpstreamError(
                f"The provider '{provider}' answered with a redirect ({resp.status_code}), which the gateway "
                "does not follow.",
                code="upstream_redirect",
            )
        return UpstreamResponse(resp, provider, self.max_response_bytes)


class _Adapter(HTTPAdapter):
    """requests' HTTP adapter, less costs on every call that the relay does not need.

    - URL parsing: requests parses each call's URL twice more, to find its pool and its request target,
      and once more to find no proxy; the gateway's URLs repeat, so the request target is kept per URL and
      the connection pool per origin (unproxied calls). The pool manager built a key of some thirty fields
      on every call to find the pool; the origins are the configured providers', a handful, so all their
      pools are kept, past the manager's limit on pools (which urllib3 2 does not close when it drops them).
    - Cookies: requests copies a provider's Set-Cookie into the response's jar through a mock request and
      response; the gateway sends its calls past Session.request, so that jar is never read.
    - The liveness check of a pooled connection before reuse: urllib3 asks ``select.poll`` whether the socket
      is readable, which under gevent is the patched poll, building watchers and a greenlet switch for a
      zero-second wait. The unpatched poll answers the same question with one system call.
    - Two sends per request where one does (``_Connection``).
    """

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        # Per origin (scheme://host:port) and TLS check, its connection pool.
        self._pools: dict[tuple[str, bool], Any] = {}
        self._targets: dict[str, str] = {}

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, **kwargs)
        pools = (_GeventHTTPPool, _GeventHTTPSPool) if greenlets.active() else (_HTTPPool, _HTTPSPool)
        self.poolmanager.pool_classes_by_scheme = {"http": pools[0], "https": pools[1]}

    def get_connection_with_tls_context(
        self, request: requests.PreparedRequest, verify: Any, proxies: Any = None, cert: Any = None
    ) -> Any:
        if proxies:
            return super().get_connection_with_tls_context(request, verify, proxies, cert)
        if not isinstance(verify, bool) or cert is not None:
            return self._pool_for(request, verify, cert)
        return _kept(self._pools, (_origin(request.url), verify), self._pool_for, request, verify, cert)

    def _pool_for(self, request: requests.PreparedRequest, verify: Any, cert: Any) -> Any:
        # requests' own path for a call without a proxy, less the URL parse that finds no proxy.
        try:
            host_params, pool_kwargs = self.build_connection_pool_key_attributes(request, verify, cert)
        except ValueError as exc:
            raise requests.exceptions.InvalidURL(exc, request=request) from None
        return self.poolmanager.connection_from_host(**host_params, pool_kwargs=pool_kwargs)

    def close(self) -> None:
        super().close()
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()

    def request_url(self, request: requests.PreparedRequest, proxies: Any) -> str:
        if proxies:
            return super().request_url(request, proxies)
        return _kept(self._targets, request.url, super().request_url, request, proxies)

    def build_response(self, req: requests.PreparedRequest, resp: Any) -> requests.Response:
        response = requests.Response()
        response.status_code = resp.status
        response.headers = CaseInsensitiveDict(resp.headers)
        response.encoding = get_encoding_from_headers(response.headers)
        response.raw = resp
        response.reason = resp.reason
        response.url = req.url.decode() if isinstance(req.url, bytes) else req.url
        response.request = req
        response.connection = self
        return response


def _kept(cache: dict, key: Any, make: Callable[..., Any], *args: Any) -> Any:
    """``cache[key]``, made by ``make(*args)`` on first use; cleared when full (the gateway's URLs are its
    providers', a few per deployment, so in practice it never is)."""
    found = cache.get(key)
    if found is None:
        if len(cache) >= 1024:
            cache.clear()
        found = cache[key] = make(*args)
    return found


def _origin(url: str) -> str:
    """``scheme://host:port`` of a URL: the part that decides its connection pool (more than one spelling
    of an origin may name the same pool, never one spelling two pools).
    """
    scheme, _, rest = url.partition("://")
    for end in "/?#":
        rest = rest.split(end, 1)[0]
    return f"{scheme.lower()}://{rest.lower()}"


@functools.lru_cache(maxsize=1024)
def _prepared_url(url: str, query: tuple[tuple[str, str], ...]) -> str:
    """``url`` with ``query``, as requests prepares it (parsed, IDNA host, requoted); cached."""
    prepared = requests.PreparedRequest()
    prepared.prepare_url(url, list(query))
    return prepared.url


def _query_key(params: Any) -> tuple[tuple[str, str], ...]:
    if not params:
        return ()
    items = params.items() if isinstance(params, Mapping) else params
    return tuple((str(k), str(v)) for k, v in items)


def _close_all(sessions: list[requests.Session]) -> None:
    for session in sessions:
        session.close()
    sessions.clear()


def _translate(exc: Exception, provider: str, url: str | None = None) -> Exception:
    """requests' and urllib3's exceptions -> the gateway's, naming the kind of failure and the host; anything
    else unchanged.
    """
    where = _host(url) or _host(getattr(getattr(exc, "request", None), "url", None))
    at = f" at {where}" if where else ""
    check = f" Check providers.{provider}.base_url in the gateway's settings, and that the host is up."
    if isinstance(exc, requests.ConnectTimeout | u3.ConnectTimeoutError):
        return UpstreamTimeout(f"The provider '{provider}'{at} did not accept a connection in time.{check}")
    if isinstance(exc, requests.Timeout | u3.TimeoutError):
        return UpstreamTimeout(f"The provider '{provider}'{at} did not answer in time.")
    if isinstance(exc, requests.ConnectionError | u3.HTTPError | requests.RequestException | OSError):
        kind = _failure_kind(exc)
        if kind is None:
            return UpstreamError(f"The provider '{provider}'{at} broke the connection.")
        return UpstreamError(f"The provider '{provider}'{at} could not be reached: {kind}.{check}")
    return exc


def _host(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urllib3.util.parse_url(url)
    except ValueError:
        return None
    if not parts.host:
        return None
    return f"{parts.host}:{parts.port}" if parts.port else parts.host


def _failure_kind(exc: BaseException) -> str | None:
    """Why a connection could not be made (refused, DNS, TLS), from the chain of causes; None when it was made
    and then broken. The most telling cause wins wherever it is in the chain: urllib3's NewConnectionError
    wraps the refusal, and its own text names an internal class (``_GeventHTTPConnection(host=...)``).
    """
    chain: list[BaseException] = []
    todo: list[BaseException] = [exc]
    while todo:
        err = todo.pop()
        if any(err is seen for seen in chain):
            continue
        chain.append(err)
        todo += [e for e in (err.__cause__, err.__context__) if e is not None]
        todo += [a for a in getattr(err, "args", ()) if isinstance(a, BaseException)]
        reason = getattr(err, "reason", None)
        if isinstance(reason, BaseException):
            todo.append(reason)
    for err in chain:
        if isinstance(err, u3.NameResolutionError | socket.gaierror):
            return "its host name does not resolve (DNS)"
    for err in chain:
        if isinstance(err, ssl.SSLError | u3.SSLError | requests.exceptions.SSLError):
            return f"the TLS handshake failed ({_first_line(err)})"
    for err in chain:
        if isinstance(err, ConnectionRefusedError) or "Connection refused" in str(err):
            return "Connection refused (nothing listens on that port)"
    for err in chain:
        if isinstance(err, u3.NewConnectionError):
            # "<...Connection(host=..., port=...)>: Failed to establish a new connection: [Errno N] why"
            why = _first_line(err).rsplit(": ", 1)[-1]
            return f"no connection could be made ({why})"
    return None


def _first_line(err: BaseException) -> str:
    text = str(err).splitlines()[0] if str(err) else type(err).__name__
    return text[:200]
