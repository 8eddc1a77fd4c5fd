"""In-process answerers (the mock model) mounted as requests transport adapters: no socket, the same
response object as HTTP gives."""

from __future__ import annotations

import io
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any

import requests
import urllib3.exceptions as u3
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict


class _MockBody(io.RawIOBase):
    """The mock's answer as a streamed body, read the way UpstreamResponse reads a socket's."""

    chunked = True

    def __init__(self, chunks: Iterator[bytes]):
        self._chunks = chunks
        self._aborted = False

    def supports_chunked_reads(self) -> bool:
        return True

    def read_chunked(self, amt: int | None = None, decode_content: bool = True) -> Iterator[bytes]:
        for chunk in self._chunks:
            if self._aborted:
                raise u3.ProtocolError("the mock stream was aborted")
            yield chunk

    def shutdown(self) -> None:
        self._aborted = True

    def release_conn(self) -> None:
        pass


class _LocalAdapter(BaseAdapter):
    """Serves a scheme's URLs in-process (``mock://`` from gateway/mock.py): no socket, the same response
    object as HTTP gives. ``answer(method, path, body)`` has ``status``, ``content_type`` and ``chunks``.
    """

    def __init__(self, answer: Callable[[str, str, bytes | None], Any]):
        super().__init__()
        self._answer = answer

    def send(self, request: requests.PreparedRequest, stream: bool = False, **kwargs: Any) -> requests.Response:
        path = urllib.parse.urlsplit(request.url).path
        # The base URL's own path (/v1) is the mock's root.
        path = path.removeprefix("/v1")
        body = request.body.encode() if isinstance(request.body, str) else request.body
        answer = self._answer(request.method or "GET", path, body)
        resp = requests.Response()
        resp.status_code = answer.status
        resp.headers = CaseInsensitiveDict({"Content-Type": answer.content_type})
        resp.raw = _MockBody(answer.chunks)
        resp.url = request.url
        resp.request = request
        resp.reason = "OK" if answer.status < 400 else "Error"
        return resp

    def close(self) -> None:
        pass
