"""What `CueClient` and `AsyncCueClient` share: configuration, defaults, request building.

The environment variables and defaults, the transport choice, `_BaseClient`
(the API key, base URL, retry state, the httpx request arguments for a call
and the stepping of a flow) and `_Resource`, the root of the resource
namespaces (`cues`, `executions`, `workers`). Nothing here does I/O.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import re
import urllib.request
from typing import Any, TypeVar

import httpx

from cuemsg._exceptions import MissingAPIKey
from cuemsg.cueapi import _flows as flows
from cuemsg.cueapi._retry import RetryPolicy
from cuemsg.cueapi._routes import Call
from cuemsg.cueapi._transport import KeepAliveTransport, Origin, origin_of

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_BASE_URL",
    "DEFAULT_LIMITS",
    "DEFAULT_TIMEOUT",
    "USER_AGENT",
]

_T = TypeVar("_T")

API_KEY_ENV = "CUEAPI_API_KEY"
BASE_URL_ENV = "CUEAPI_BASE_URL"
DEFAULT_BASE_URL = "https://api.cueapi.ai"
DEFAULT_TIMEOUT = 10.0  # seconds, for connect, write, pool and read (a long-poll adds its wait)
# One pool per client; receivers long-poll, so allow a few idle connections per host.
DEFAULT_LIMITS = httpx.Limits(max_connections=100, max_keepalive_connections=20)

try:
    _VERSION = importlib.metadata.version("cuemsg")
except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a bare checkout
    _VERSION = "0"
USER_AGENT = f"cuemsg/{_VERSION}"
_URL_CACHE_SIZE = 256
_HEADERS_CACHE_SIZE = 64  # distinct header sets kept normalised
_OWN_HEADERS = frozenset({b"accept", b"user-agent"})  # set on every request by `_request_args`
# Header names a call may not set for `encode_call` to build its bytes (httpx would merge them).
_MERGED = frozenset(
    {"accept", "accept-encoding", "authorization", "connection", "content-length"}
    | {"content-type", "host", "transfer-encoding", "user-agent"}
)
# Path characters that httpx sends as they are (anything else: httpx quotes the path).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]*")
_BODYLESS_LENGTH = frozenset({"POST", "PUT", "PATCH"})  # httpx sends Content-Length: 0
_JSON_TYPE = b"Content-Type: application/json\r\n"


def _default_transport() -> httpx.BaseTransport | None:
    """`KeepAliveTransport`, or None (httpx's own) when the environment names a proxy.

    httpx honours `HTTP_PROXY` / `HTTPS_PROXY` / `ALL_PROXY` (and `NO_PROXY`);
    `KeepAliveTransport` has no proxy support, so with a proxy set the client
    keeps httpx's transport and behaves as it did before.
    """
    proxies = urllib.request.getproxies()
    if any(scheme in proxies for scheme in ("http", "https", "all")):
        return None
    return KeepAliveTransport()


def check_base_url(base_url: str) -> None:
    """Refuse a URL httpx cannot send to (it would fail at the first call, obscurely).

    Raises:
        ValueError: not an http:// or https:// URL; says to add http:// when no scheme.
    """
    if not base_url.lower().startswith(("http://", "https://")):
        hint = "" if "://" in base_url else f": add http:// (http://{base_url})"
        raise ValueError(f"the base URL {base_url!r} is not an http:// or https:// URL{hint}")


def _check_config(base_url: str, timeout: float, max_retries: int) -> None:
    """Refuse at construction what would only fail later, as an obscure transport error."""
    check_base_url(base_url)
    if not timeout > 0:  # `not >`: NaN is refused too
        raise ValueError(f"timeout must be > 0 seconds, not {timeout}")
    if max_retries < 0:
        raise ValueError(f"max_retries must be >= 0, not {max_retries}")


class _BaseClient:
    """Configuration, request building and the flow stepping shared by both clients."""

    def __init__(
        self,
        api_key: str | None,
        base_url: str | None,
        *,
        timeout: float,
        max_retries: int,
        use_extensions: bool,
    ) -> None:
        self._api_key = api_key or os.environ.get(API_KEY_ENV) or None
        self.base_url = (base_url or os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL).rstrip("/")
        _check_config(self.base_url, timeout, max_retries)
        self.timeout = timeout
        self.use_extensions = use_extensions
        self.request_count = 0  # HTTP requests sent, retries included
        self._st = flows.FlowState(
            policy=RetryPolicy(max_retries=max_retries),
            use_extensions=use_extensions,
            has_key=self._api_key is not None,
        )

    @property
    def api_key(self) -> str | None:
        """The API key sent as `Authorization: Bearer ...` (None: only info/register work)."""
        return self._api_key

    @api_key.setter
    def api_key(self, value: str | None) -> None:
        self._api_key = value or None
        self._st.has_key = self._api_key is not None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(base_url={self.base_url!r})"

    def _request_args(self, call: Call) -> dict[str, Any]:
        """Keyword arguments of `httpx.Client.build_request` for `call`."""
        headers = {"Accept": "application/json", "User-Agent": USER_AGENT, **call.headers}
        if call.auth:
            if not self.api_key:
                raise MissingAPIKey()
            headers["Authorization"] = f"Bearer {self.api_key}"
        content = call.content()
        if content is not None:
            headers["Content-Type"] = "application/json"
        timeout = httpx.Timeout(self.timeout)
        if call.wait:
            # A long-poll holds the answer for up to `wait` seconds: read longer than that.
            timeout = httpx.Timeout(self.timeout, read=self.timeout + call.wait)
        return {
            "method": call.method,
            "url": self.base_url + call.path,
            "params": call.params or None,
            "content": content,
            "headers": headers,
            "timeout": timeout,
        }

    def _init_building(self, http: httpx.Client | httpx.AsyncClient) -> None:
        """What `_build_request` needs from the httpx client, worked out once."""
        # httpx's default headers that every request of ours keeps (Accept-Encoding,
        # Connection), in their order; `_request_args` always sets Accept and User-Agent.
        self._http_for_build = http
        self._default_headers = [
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in http.headers.raw
            if name.lower() not in _OWN_HEADERS
        ]
        self._default_names = frozenset(name.lower() for name, _ in self._default_headers)
        self._urls: dict[str, httpx.URL] = {}
        self._header_sets: dict[tuple[tuple[str, str], ...], httpx.Headers] = {}

    def _build_request(self, call: Call) -> httpx.Request:
        """What `self._http.build_request(**self._request_args(call))` gives, built directly.

        For a client made here only: its headers (httpx's defaults) are merged
        once, in `__init__`, and it has no base URL, cookies or params of its
        own to merge. The same method, URL, query, body, headers and timeouts
        (test_transport.py compares the two).
        """
        args = self._request_args(call)
        ours: dict[str, str] = args["headers"]
        if any(name.lower() in self._default_names for name in call.headers):
            return self._http_for_build.build_request(**args)
        timeout: httpx.Timeout = args["timeout"]
        url = self._urls.get(args["url"])  # parsing a URL is a third of building a request
        if url is None:
            url = httpx.URL(args["url"])
            if len(self._urls) >= _URL_CACHE_SIZE:
                self._urls.clear()
            self._urls[args["url"]] = url
        # Normalising a header list is half of building a request, and a client sends
        # few sets (one per worker id): each is normalised once, then copied.
        key = tuple(ours.items())
        headers = self._header_sets.get(key)
        if headers is None:
            headers = httpx.Headers([*self._default_headers, *key])
            if len(self._header_sets) >= _HEADERS_CACHE_SIZE:
                self._header_sets.clear()
            self._header_sets[key] = headers
        return httpx.Request(
            call.method,
            url,
            params=args["params"],
            content=args["content"],
            headers=headers,  # copied by the request: the cached set stays as it is
            extensions={"timeout": timeout.as_dict()},
        )

    def _init_direct(self, enabled: bool) -> None:
        """What `encode_call` needs, worked out once (`enabled`: the client sends through
        its own keep-alive transport, which takes request bytes)."""
        url = httpx.URL(self.base_url)
        self.origin: Origin | None = None
        if enabled and not (url.userinfo or url.query or url.fragment):
            # No host: left to the httpx path, which raises UnsupportedProtocol at the call.
            with contextlib.suppress(httpx.UnsupportedProtocol):
                self.origin = origin_of(url)
        self._host_line = b"Host: " + url.netloc + b"\r\n"
        self._path_prefix = url.raw_path.decode("ascii").rstrip("/")
        self._blocks: dict[tuple[Any, ...], bytes | None] = {}
        self._lines: dict[tuple[str, str], bytes | None] = {}  # (method, path): request line
        self._plain_timeouts = httpx.Timeout(self.timeout).as_dict()

    def encode_call(self, call: Call) -> tuple[bytes, dict[str, float | None]] | None:
        """`call`'s request bytes and timeouts, built here; None when httpx must build it.

        The bytes are the ones `encode_request` makes of `_build_request`'s
        request (`tests/cueapi/test_transport.py` compares them), without an
        `httpx.Request` on the way: per request only the request line, the
        body and its length are new; the header lines are one cached block per
        header set. Left to httpx (None): a client on another transport or with
        user:pass@ in its URL, a query string, a path httpx would quote or
        normalise (a segment starting with a dot), a header the call sets that
        httpx merges, or a header value that is not plain ASCII or holds a
        line break (httpx raises the error).

        Raises:
            MissingAPIKey: the call needs the API key and the client has none.
        """
        if self.origin is None or call.params:
            return None
        try:
            line = self._lines[call.method, call.path]
        except KeyError:
            if len(self._lines) >= _URL_CACHE_SIZE:  # ids in paths: few repeat, keep it small
                self._lines.clear()
            line = self._lines[call.method, call.path] = self._request_line(call)
        if line is None:
            return None
        if call.auth and not self._api_key:
            raise MissingAPIKey()
        key = (call.auth, self._api_key, *call.headers.items())
        try:
            block = self._blocks[key]
        except KeyError:
            if len(self._blocks) >= _HEADERS_CACHE_SIZE:
                self._blocks.clear()
            block = self._blocks[key] = self._header_block(call)
        if block is None:
            return None
        content = call.content()
        if content is None:
            length = b"Content-Length: 0\r\n" if call.method in _BODYLESS_LENGTH else b""
            data = b"".join((line, self._host_line, length, block, b"\r\n"))
        else:
            length = b"Content-Length: %d\r\n\r\n" % len(content)
            data = b"".join((line, self._host_line, block, _JSON_TYPE, length, content))
        timeouts = self._plain_timeouts
        if call.wait:  # as `_request_args`: a long-poll reads `wait` seconds longer
            timeouts = {**timeouts, "read": self.timeout + call.wait}
        return data, timeouts

    def _request_line(self, call: Call) -> bytes | None:
        """`call`'s request line, or None if httpx must build the request (its path)."""
        path = self._path_prefix + call.path
        if _PLAIN_PATH.fullmatch(path) is None or "/." in path:  # httpx drops dot segments
            return None
        return f"{call.method} {path} HTTP/1.1\r\n".encode("ascii")

    def _header_block(self, call: Call) -> bytes | None:
        """The header lines every request with `call`'s headers and auth sends (after Host,
        before Content-Type), or None if httpx must build them."""
        if any(name.lower() in _MERGED for name in call.headers):
            return None
        lines = [*self._default_headers, ("Accept", "application/json"), ("User-Agent", USER_AGENT)]
        lines += call.headers.items()
        if call.auth and self._api_key:
            lines.append(("Authorization", f"Bearer {self._api_key}"))
        text = "".join(f"{name}: {value}\r\n" for name, value in lines)
        if not text.isascii() or text.count("\r") != len(lines) or text.count("\n") != len(lines):
            return None
        return text.encode("ascii")


class _Resource:
    def __init__(self, client: Any) -> None:
        self._client = client
        self._st: flows.FlowState = client._st


# -- sync ---------------------------------------------------------------------------------
