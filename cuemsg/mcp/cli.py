"""The `cuemsg mcp` command: arguments, key and URL, the embedded server, the transport.

`add_parser(sub)` adds the `mcp` sub-command to the `cuemsg` CLI's
sub-parsers and `run(args)` runs it; `python -m cuemsg.mcp` takes the same
arguments. Key and URL come from `--api-key` / `--base-url`, else
`CUEAPI_API_KEY` / `CUEAPI_BASE_URL`; with neither and `--embedded DB`, the
embedded server is started in this process on a free loopback port, with
the database's development key. Stdout belongs to the MCP stdio transport:
everything else is printed on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

from cuemsg._exceptions import CuemsgError
from cuemsg.cueapi._base import DEFAULT_BASE_URL, check_base_url

__all__ = ["add_parser", "build_parser", "run"]

DESCRIPTION = """Run an MCP server that gives an LLM agent the mailbox NAME and the tools to
send, read, answer and ask (stdio by default; --http HOST:PORT serves streamable HTTP)."""


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mailbox", required=True, metavar="NAME", help="the agent's mailbox")
    parser.add_argument(
        "--http",
        metavar="HOST:PORT",
        help="serve the streamable HTTP transport at http://HOST:PORT/mcp instead of stdio",
    )
    # SUPPRESS: a value the `cuemsg` command took before `mcp` is not reset to None here.
    parser.add_argument(
        "--api-key", default=argparse.SUPPRESS, help="CueAPI key (default: $CUEAPI_API_KEY)"
    )
    parser.add_argument(
        "--base-url", default=argparse.SUPPRESS, help="CueAPI URL (default: $CUEAPI_BASE_URL)"
    )
    parser.add_argument(
        "--session-ttl",
        type=float,
        default=1800.0,
        metavar="SECONDS",
        help="with --http: a session with no request open this long has ended, and the "
        "requests it held are delivered again (default: 1800)",
    )
    parser.add_argument(
        "--embedded",
        metavar="DB",
        help="with no key or URL set: start the embedded server on DB (a SQLite file)",
    )


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `mcp` to the sub-parsers `sub` of the `cuemsg` command; answers its parser."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "mcp", help="MCP server: a mailbox and its tools for an LLM agent", description=DESCRIPTION
    )
    _add_arguments(parser)
    parser.set_defaults(func=run)
    return parser


def build_parser() -> argparse.ArgumentParser:
    """The parser of `python -m cuemsg.mcp` (the same arguments as `cuemsg mcp`)."""
    parser = argparse.ArgumentParser(prog="python -m cuemsg.mcp", description=DESCRIPTION)
    _add_arguments(parser)
    return parser


def _host_port(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--http wants HOST:PORT (e.g. 127.0.0.1:8765), not {value!r}")
    return host.strip("[]"), int(port)


def run(args: argparse.Namespace) -> int:
    """Run the MCP server until its transport closes; answers the exit status."""
    try:
        from cuemsg.mcp.server import create_server
    except ImportError as exc:  # the SDK is an optional extra
        print(f"cuemsg mcp: {exc}; install it with: pip install 'cuemsg[mcp]'", file=sys.stderr)
        return 2
    try:
        http = _host_port(args.http) if args.http else None
    except ValueError as exc:
        print(f"cuemsg mcp: {exc}", file=sys.stderr)
        return 2
    if not args.session_ttl > 0:
        print(
            f"cuemsg mcp: --session-ttl must be > 0 seconds, not {args.session_ttl:g}",
            file=sys.stderr,
        )
        return 2
    key = getattr(args, "api_key", None) or os.environ.get("CUEAPI_API_KEY")
    url = getattr(args, "base_url", None) or os.environ.get("CUEAPI_BASE_URL")
    with contextlib.ExitStack() as stack:
        if not key and not url and args.embedded:
            url, key = stack.enter_context(_embedded(args.embedded))
            print(f"cuemsg mcp: embedded CueAPI on {url} (db: {args.embedded})", file=sys.stderr)
        if not key:
            print(
                "cuemsg mcp: no CueAPI key: set CUEAPI_API_KEY or pass --api-key "
                "(or --embedded DB for a local server)",
                file=sys.stderr,
            )
            return 2
        try:
            check_base_url(url or DEFAULT_BASE_URL)  # before the SDK's task groups wrap it
        except ValueError as exc:
            print(f"cuemsg mcp: {exc}", file=sys.stderr)
            return 2
        try:
            if http is None:
                create_server(args.mailbox, api_key=key, base_url=url).run("stdio")
            else:
                _serve_http(args, http, key, url)
        except KeyboardInterrupt:
            return 130
        except Exception as exc:
            # The mailbox opens in the server's lifespan, inside the SDK's task groups: a
            # refused key, name or URL arrives wrapped in exception groups. One line, not those.
            found = _cuemsg_error(exc)
            if found is None:
                raise
            print(f"cuemsg mcp: cannot open the mailbox {args.mailbox!r}: {found}", file=sys.stderr)
            return 1
    return 0


def _serve_http(args: argparse.Namespace, http: tuple[str, int], key: str, url: str | None) -> None:
    """Serve the streamable HTTP app on `http` until interrupted."""
    import uvicorn

    from cuemsg.mcp.server import create_http_app

    host, port = http
    app = create_http_app(args.mailbox, api_key=key, base_url=url, session_ttl=args.session_ttl)
    print(f"cuemsg mcp: mailbox {args.mailbox!r} on http://{host}:{port}/mcp", file=sys.stderr)
    # Stderr is the log of this server: warnings, not one line per HTTP request.
    uvicorn.run(app, host=host, port=port, log_level="warning")


def _cuemsg_error(exc: BaseException) -> CuemsgError | None:
    """The first `CuemsgError` in `exc`, looking inside exception groups."""
    if isinstance(exc, CuemsgError):
        return exc
    for inner in getattr(exc, "exceptions", ()):  # an exception group (3.10: the backport)
        found = _cuemsg_error(inner)
        if found is not None:
            return found
    return None


@contextlib.contextmanager
def _embedded(db: str) -> Iterator[tuple[str, str]]:
    """Serve the embedded CueAPI on `db` from a thread; yields (base URL, development key)."""
    from cuemsg.server.app import create_app, open_storage
    from cuemsg.server.keys import create_dev_key
    from cuemsg.server.run import Uvicorn
    from cuemsg.server.settings import ServerSettings
    from cuemsg.testing import free_port

    settings = ServerSettings.from_env(db=db)
    storage = open_storage(settings)

    async def dev_key() -> str:
        await storage.open()
        try:
            # Keys are stored hashed: the database's own key cannot be read back,
            # so this process gets a key of the development tenant of its own.
            return await create_dev_key(storage)
        finally:
            await storage.close()

    key = asyncio.run(dev_key())
    port = free_port()
    server = Uvicorn(create_app(settings), host="127.0.0.1", port=port, loop="asyncio")
    thread = threading.Thread(target=lambda: asyncio.run(server.serve()), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the embedded server did not start on port {port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}", key
    finally:
        server.should_exit = True
        thread.join(timeout=10)
