"""HTTP/1.1 for the client transports, without I/O: a request's bytes, an answer's head and framing.

Both keep-alive transports (`_transport.py`, sync, and `_async_transport.py`)
write what `encode_request` makes in one write and read answers with these
rules; each does its own reading. Parsing here is a few splits: the
standard library's `http.client` parses answer headers with the `email`
package, which cost more than the rest of an answer's reading.
"""

from __future__ import annotations

from typing import BinaryIO, Literal

import httpx

#: Bytes of status line and headers accepted; of a chunk-size line or a trailer.
MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024

Head = tuple[bytes, int, bytes, list[tuple[bytes, bytes]]]
Framing = tuple[Literal["none", "chunked", "length", "eof"], int]


def encode_request(request: httpx.Request, body: bytes) -> bytes:
    """The request's head and body as the bytes to write.

    Adds `Host` when the request has none; a chunked (streamed) body, read
    whole, goes as one chunk.

    Raises:
        httpx.LocalProtocolError: a header name or value holds CR or LF.
    """
    url = request.url
    raw = request.headers.raw
    block = b"\r\n".join([name + b": " + value for name, value in raw])
    # The separators hold len(raw) - 1 of each: any other CR or LF is in a header
    # (one count over the block is cheaper than four searches per header).
    if block.count(b"\r") + block.count(b"\n") != 2 * max(len(raw) - 1, 0):
        for name, value in raw:
            if b"\r" in name or b"\n" in name or b"\r" in value or b"\n" in value:
                raise httpx.LocalProtocolError(
                    f"header {name!r} holds a line break", request=request
                )
    lowered = [name.lower() for name, _ in raw]
    head = b"%s %s HTTP/1.1" % (request.method.encode("ascii"), url.raw_path)
    if b"host" not in lowered:
        head += b"\r\nHost: " + url.netloc
    if raw:
        head += b"\r\n" + block
    if b"transfer-encoding" in lowered:
        chunked = False
        for (_, value), lower in zip(raw, lowered, strict=True):
            if lower == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if chunked:
            body = (b"%x\r\n%b\r\n" % (len(body), body) if body else b"") + b"0\r\n\r\n"
    return head + b"\r\n\r\n" + body


def parse_head(head: bytes) -> Head:
    """(version, status, reason, headers) of an answer's head (without its blank line).

    Raises:
        ValueError: not an HTTP/1.x status line, or a header line without a colon.
    """
    status_line, *lines = head.split(b"\r\n")
    version, _, rest = status_line.partition(b" ")
    code, _, reason = rest.partition(b" ")
    if version not in (b"HTTP/1.1", b"HTTP/1.0") or len(code) != 3 or not code.isdigit():
        raise ValueError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
    headers = []
    for line in lines:
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise ValueError(f"malformed header line: {line[:80]!r}")
        headers.append((name.strip(), value.strip()))
    return version, int(code), reason, headers


def tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    """The lower-cased comma-separated values of every header called `name`."""
    return {t.strip().lower() for n, v in headers if n.lower() == name for t in v.split(b",") if t}


def is_final(status: int) -> bool:
    """False for an informational (1xx) answer that another follows (101 ends the exchange)."""
    return not 100 <= status < 200 or status == 101


def reusable(version: bytes, headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether the connection may carry another request after this answer."""
    connection = tokens(headers, b"connection")
    return b"close" not in connection and (version == b"HTTP/1.1" or b"keep-alive" in connection)


def framing(method: str, status: int, headers: list[tuple[bytes, bytes]]) -> Framing:
    """How the answer's body is delimited: none, chunked, a length, or the connection's end.

    Raises:
        ValueError: conflicting or malformed Content-Length headers.
    """
    if method == "HEAD" or status in (204, 304) or status == 101:
        return "none", 0
    if b"chunked" in tokens(headers, b"transfer-encoding"):
        return "chunked", 0
    lengths = {v for n, v in headers if n.lower() == b"content-length"}
    if len(lengths) > 1:
        raise ValueError(f"conflicting Content-Length headers: {sorted(lengths)}")
    if lengths:
        length = lengths.pop()
        if not length.isdigit():
            raise ValueError(f"malformed Content-Length: {length[:40]!r}")
        return "length", int(length)
    return "eof", 0


def chunk_size(line: bytes) -> int:
    """The size a chunk-size line announces (extensions after `;` ignored).

    Raises:
        ValueError: not a hexadecimal size.
    """
    return int(line.split(b";", 1)[0].strip(), 16)


class IncompleteAnswer(Exception):
    """The connection ended before a whole answer (sync reader)."""


def _line(fp: BinaryIO, limit: int) -> bytes:
    line = fp.readline(limit + 1)
    if not line.endswith(b"\n"):
        if len(line) > limit:
            raise ValueError(f"a line longer than {limit} bytes")
        raise IncompleteAnswer("the connection closed mid-answer")
    return line.rstrip(b"\r\n")


def _exactly(fp: BinaryIO, n: int) -> bytes:
    data = fp.read(n)
    if len(data) < n:
        raise IncompleteAnswer(f"the connection closed {n - len(data)} bytes short of the body")
    return data


def read_answer(fp: BinaryIO, method: str) -> tuple[Head, bytes, bool]:
    """Read one whole answer from a buffered file: (head, body, connection reusable).

    Raises:
        IncompleteAnswer: the connection ended before the whole answer.
        ValueError: a malformed answer.
    """
    while True:
        lines = []
        size = 0
        while line := _line(fp, MAX_LINE):
            size += len(line)
            if size > MAX_HEAD:
                raise ValueError(f"an answer head longer than {MAX_HEAD} bytes")
            lines.append(line)
        if not lines:
            raise ValueError("an empty answer head")
        head = parse_head(b"\r\n".join(lines))
        if is_final(head[1]):
            break
    version, status, _reason, headers = head
    keep = reusable(version, headers)
    kind, length = framing(method, status, headers)
    if kind == "none":
        body = b""
    elif kind == "length":
        body = _exactly(fp, length)
    elif kind == "chunked":
        parts = []
        while size := chunk_size(_line(fp, MAX_LINE)):
            parts.append(_exactly(fp, size))
            if _exactly(fp, 2) != b"\r\n":
                raise ValueError("a chunk does not end with CRLF")
        while _line(fp, MAX_LINE):  # trailers, then the blank line
            pass
        body = b"".join(parts)
    else:
        body, keep = fp.read(), False
    return head, body, keep


class RawHeaders:
    """An answer's header list with the one lookup the flows make: `get`, case-insensitive,
    repeated headers joined with ", " (as `httpx.Headers.get` joins them)."""

    __slots__ = ("raw",)

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        self.raw = raw

    def get(self, name: str, default: str | None = None) -> str | None:
        key = name.lower().encode("latin-1")
        values = [value.decode("latin-1") for n, value in self.raw if n.lower() == key]
        return ", ".join(values) if values else default


class Reply:
    """An answer read whole, as the flows read it: `status_code`, `headers.get`, `content`.

    What the clients hand their flows for a request they sent directly (see
    `_BaseClient.encode_call`): making an `httpx.Response` costs more than
    reading the answer did, and the flows only read these three.
    """

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status: int, headers: list[tuple[bytes, bytes]], content: bytes) -> None:
        self.status_code = status
        self.headers = RawHeaders(headers)
        self.content = content

    def __repr__(self) -> str:
        return f"<Reply [{self.status_code}]>"


def reply(head: Head, content: bytes) -> Reply | httpx.Response:
    """The `Reply` of an answer read whole; an `httpx.Response` when its body is encoded
    (gzip, say), which httpx decodes as it would have."""
    _version, status, _reason, headers = head
    if any(name.lower() == b"content-encoding" for name, _ in headers):
        response = httpx.Response(status, headers=headers, stream=httpx.ByteStream(content))
        response.read()
        return response
    return Reply(status, headers, content)


def whole_response(
    request: httpx.Request,
    head: Head,
    content: bytes,
) -> httpx.Response:
    """The `httpx.Response` of an answer read whole, already read (`.content` is set).

    Without a `Content-Encoding` the body is the content as it came: it is set
    as `read()` would set it, without `read()`'s iterators, decoders and context
    managers (half of what a small answer costs on the client). With one,
    `read()` decodes it (gzip, say).
    """
    version, status, reason, headers = head
    response = httpx.Response(
        status,
        headers=headers,
        stream=httpx.ByteStream(content),
        extensions={"http_version": version, "reason_phrase": reason},
        request=request,
    )
    if any(name.lower() == b"content-encoding" for name, _ in headers):
        response.read()
    else:  # what `read()` leaves: the content, the stream consumed and closed
        response._content = content
        response._num_bytes_downloaded = len(content)
        response.is_stream_consumed = True
        response.is_closed = True
    return response
