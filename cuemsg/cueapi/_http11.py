"""HTTP/1.1 for the client transports, without I/O: a request's bytes, an answer's head and framing.

Both keep-alive transports (`_transport.py`, sync, and `_async_transport.py`)
write what `encode_request` makes in one write and read answers with these
rules; each does its own reading. Parsing here is a few splits: the
standard library's `http.client` parses answer headers with the `email`
package, which cost more than the rest of an answer's reading.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import httpx

#: Bytes of status line and headers accepted; of a chunk-size line or a trailer.
MAX_HEAD = 64 * 1024
MAX_LINE = 8 * 1024
#: Bytes asked of each recv (an answer to a small call comes whole in one).
RECV_SIZE = 64 * 1024

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
        name = name.strip()
        if not colon or not name:
            raise ValueError(f"malformed header line: {line[:80]!r}")
        headers.append((name, value.strip()))
    return version, int(code), reason, headers


def tokens(headers: list[tuple[bytes, bytes]], name: bytes) -> set[bytes]:
    """The lower-cased comma-separated values of every header called `name`."""
    found: set[bytes] = set()
    for n, v in headers:  # a plain loop: most answers have no such header
        if n.lower() == name:
            found.update(t.strip().lower() for t in v.split(b",") if t)
    return found


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
    lengths = set()
    for n, v in headers:
        if n.lower() == b"content-length":
            lengths.add(v)
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


class SocketReader:
    """What the sync transport reads one answer through: a buffer over `sock.recv`.

    One per answer, in place of `sock.makefile("rb")`: a buffered file per
    request, and a Python call per header line into it, were a tenth of a
    small exchange's client CPU. `readline` and `read` behave as the
    buffered file's do; `head` takes a whole, plain head from the buffer in
    one step. `leftover` says whether bytes came after the answer (the
    connection is then not reused: nothing should follow an answer).
    """

    __slots__ = ("_buf", "_eof", "_pos", "_recv")

    def __init__(self, recv: Callable[[int], bytes]) -> None:
        self._recv = recv
        self._buf = b""
        self._pos = 0
        self._eof = False

    def _more(self) -> bytes:
        """What one recv gives; b"" at the connection's end (not read past)."""
        if self._eof:
            return b""
        data = self._recv(RECV_SIZE)
        self._eof = not data
        return data

    def _fill(self) -> bool:
        """Append what one recv gives to the (short) rest of the buffer; False at the end."""
        data = self._more()
        if not data:
            return False
        self._buf = self._buf[self._pos :] + data if self._pos < len(self._buf) else data
        self._pos = 0
        return True

    @property
    def leftover(self) -> bool:
        return self._pos < len(self._buf)

    def head(self) -> bytes | None:
        """A head (without its blank line) the buffer holds or the next reads bring, if it
        is plain: not empty, CRLF line ends only (no bare LF, no CR before a CRLF), at
        most `MAX_LINE` bytes. None otherwise, or at the connection's end, with nothing
        taken: `_head_lines` then reads it as the buffered file was read, line by line."""
        while True:
            buf, pos = self._buf, self._pos
            end = buf.find(b"\r\n\r\n", pos)
            last = end + 2 if end >= 0 else len(buf)  # the head so far, with its last CRLF
            if buf.count(b"\n", pos, last) != buf.count(b"\r\n", pos, last):
                return None
            if buf.find(b"\r\r\n", pos, last) >= 0:
                return None
            if end >= 0:
                if end - pos > MAX_LINE or buf.startswith(b"\r\n", pos):
                    return None  # long (the line reader enforces the limits), or empty
                self._pos = end + 4
                return buf[pos:end]
            if len(buf) - pos > MAX_LINE or not self._fill():
                return None

    def readline(self, limit: int) -> bytes:
        """As `BufferedReader.readline(limit)`: up to and with a LF, at most `limit` bytes,
        less at the connection's end."""
        while True:
            buf, pos = self._buf, self._pos
            end = buf.find(b"\n", pos, pos + limit)
            if end >= 0:
                self._pos = end + 1
                return buf[pos : end + 1]
            if len(buf) - pos >= limit or not self._fill():
                line = self._buf[self._pos : self._pos + limit]
                self._pos += len(line)
                return line

    def read(self, n: int = -1) -> bytes:
        """As `BufferedReader.read(n)`: `n` bytes, less at the connection's end; all of it
        to the end with -1."""
        buf, pos = self._buf, self._pos
        if 0 <= n <= len(buf) - pos:
            self._pos = pos + n
            return buf[pos : pos + n]
        # A long body: its pieces are joined once (never the buffer grown per recv).
        parts = [buf[pos:]]
        have = len(parts[0])
        while n < 0 or have < n:
            data = self._more()
            if not data:
                break
            parts.append(data)
            have += len(data)
        data = b"".join(parts)
        self._buf, self._pos = data, min(have, n) if n >= 0 else have
        return data[: self._pos]


def _line(fp: SocketReader, limit: int) -> bytes:
    line = fp.readline(limit + 1)
    if not line.endswith(b"\n"):
        if len(line) > limit:
            raise ValueError(f"a line longer than {limit} bytes")
        raise IncompleteAnswer("the connection closed mid-answer")
    return line.rstrip(b"\r\n")


def _exactly(fp: SocketReader, n: int) -> bytes:
    data = fp.read(n)
    if len(data) < n:
        raise IncompleteAnswer(f"the connection closed {n - len(data)} bytes short of the body")
    return data


def _head_lines(fp: SocketReader) -> bytes:
    """An answer's head (without its blank line), read line by line: lines end at a LF,
    CRs before it dropped, as `http.client` reads them."""
    lines = []
    size = 0
    while line := _line(fp, MAX_LINE):
        size += len(line)
        if size > MAX_HEAD:
            raise ValueError(f"an answer head longer than {MAX_HEAD} bytes")
        lines.append(line)
    if not lines:
        raise ValueError("an empty answer head")
    return b"\r\n".join(lines)


def read_answer(fp: SocketReader, method: str) -> tuple[Head, bytes, bool]:
    """Read one whole answer: (head, body, connection reusable).

    Not reusable if bytes came after the answer.

    Raises:
        IncompleteAnswer: the connection ended before the whole answer.
        ValueError: a malformed answer.
    """
    while True:
        # A plain head (the server's) in one step; anything else line by line.
        raw = fp.head()
        if raw is None:
            raw = _head_lines(fp)
        head = parse_head(raw)
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
    return head, body, keep and not fp.leftover


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
    for name, _ in headers:
        if name.lower() == b"content-encoding":
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
