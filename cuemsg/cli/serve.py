"""`cuemsg serve` (the embedded CueAPI server), `cuemsg keys create` (a key
of its database's development tenant) and `cuemsg demo`."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import logging
import ssl
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from cuemsg import __version__
from cuemsg._exceptions import StorageOpenError
from cuemsg._inspect import CommandError
from cuemsg.cli._output import CANNOT_LISTEN, EXIT_CODES, UsageError, interrupted
from cuemsg.cli.webhook import add_webhook_options
from cuemsg.server.run import run_loop

if TYPE_CHECKING:
    from cuemsg.server.settings import ServerSettings

#: The `--db` URL schemes the server knows; anything else with `://` is a mistake.
DB_SCHEMES = ("sqlite", "postgresql", "postgres")
LOOPBACK = ("127.0.0.1", "localhost", "::1")


def check_db(db: str) -> None:
    """Refuse a `--db` URL whose scheme no backend serves (`mysql://x` is not a file name)."""
    scheme, sep, _ = db.partition("://")
    if sep and scheme.lower() not in DB_SCHEMES:
        raise UsageError(
            f"--db {db}: unknown URL scheme {scheme!r}; use a SQLite file path, "
            "sqlite:///path, :memory:, or a postgresql:// URL"
        )


def check_tls(certfile: str | None, keyfile: str | None) -> None:
    """Both TLS files or neither, and they must load, before anything is printed."""
    if keyfile and not certfile:
        raise UsageError("--ssl-keyfile needs --ssl-certfile")
    if not certfile:
        return
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise UsageError(f"cannot load the TLS certificate {certfile}: {exc}") from None


def port_number(text: str) -> int:
    """An argparse type: a TCP port, 0 (a free one) to 65535."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be 0 to 65535, not {text}")
    return port


def _serve(args: argparse.Namespace) -> int:
    from cuemsg.server.app import create_app, ensure_dev_key, open_storage
    from cuemsg.server.run import Uvicorn, bind
    from cuemsg.server.settings import ServerSettings, parse_duration

    def duration(text: str | None) -> float | None:
        return None if text is None else parse_duration(text)

    try:
        settings = ServerSettings.from_env(
            db=args.db,
            lease_seconds=args.lease_seconds,
            unclaimed_timeout=args.unclaimed_timeout,
            rate_limit=args.rate_limit,
            sweep_interval=args.sweep_interval,
            extensions=False if args.no_extensions else None,
            access_log=args.access_log or None,
            registration=args.registration,
            retention=duration(args.retention),
            dead_letter_retention=duration(args.dead_letter_retention),
            quota_pending=args.quota_pending,
            quota_stored_bytes=args.quota_stored_bytes,
            host=args.host,
            webhook_allow=tuple(args.webhook_allow) or None,
            webhook_backoff_scale=args.webhook_backoff_scale,
            # /metrics: on for loopback; beyond it, only when asked for.
            metrics=args.metrics or args.host in LOOPBACK,
        )
    except ValueError as exc:
        raise UsageError(f"serve: {exc}") from None
    check_db(settings.db)
    check_tls(args.ssl_certfile, args.ssl_keyfile)
    host = args.host
    try:
        sock = bind(host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            why = "address already in use (pick another --port, or --port 0 for a free one)"
        elif exc.errno == errno.EADDRNOTAVAIL:  # the port is fine: the host is the mistake
            why = "no interface of this machine has that address (check --host)"
        else:
            why = str(exc.strerror or exc)
        raise CommandError(
            f"serve: cannot listen on {host}:{args.port}: {why}", CANNOT_LISTEN
        ) from None
    with sock:
        try:
            storage = open_storage(settings)
        except StorageOpenError as exc:  # one line: the file and what is wrong with it
            raise UsageError(f"serve: {exc}") from None
        port = sock.getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        scheme = "https" if args.ssl_certfile else "http"
        base_url = f"{scheme}://{url_host}:{port}"
        server = Uvicorn(
            create_app(settings, storage),
            host=host,
            port=port,
            log_level="info" if args.access_log else "warning",
            access_log=settings.access_log,
            ssl_certfile=args.ssl_certfile,
            ssl_keyfile=args.ssl_keyfile,
        )

        app_server = server.app_server
        # A storage that cannot open is said in one line below, not as uvicorn's traceback.
        quiet = _QuietStartupFailure(lambda: app_server.startup_error is not None)

        async def serve() -> None:
            logging.getLogger("uvicorn.error").addFilter(quiet)
            try:
                with contextlib.suppress(SystemExit):  # how uvicorn ends when startup fails
                    await server.serve(sockets=[sock])
            finally:
                logging.getLogger("uvicorn.error").removeFilter(quiet)

        async def run() -> bool:
            serving = asyncio.create_task(serve())
            while not server.started:  # the app's storage is open once uvicorn has started
                if serving.done():
                    await serving
                    return False
                await asyncio.sleep(0.01)
            # The key comes from the storage the app serves (a :memory: one has no other).
            _announce(base_url, settings, await ensure_dev_key(storage))
            await serving
            return True

        try:
            started = run_loop(run())
        except KeyboardInterrupt:  # uvicorn shuts down, then raises the Ctrl-C it held
            return interrupted(f"the server on {base_url} stopped", as_json=False)
    if not started and app_server.startup_error is not None:
        raise UsageError(f"serve: {app_server.startup_error}")
    if not started:
        raise CommandError(
            f"serve: the server did not start: its database ({settings.db}) could not be "
            "opened (the error is logged above)"
        )
    return 0


def _announce(base_url: str, settings: ServerSettings, key: str | None) -> None:
    """What `serve` prints once it is listening: where, the key (only when it was
    just made: keys are stored hashed), the export lines, who may register."""
    print(f"cuemsg {__version__} serving CueAPI on {base_url} (db: {settings.db})")
    if key is not None:
        print(f"development API key (shown once, stored hashed): {key}")
    else:
        print(
            "development API key: made on first start and shown then (stored hashed); "
            f"a new one: cuemsg keys create --db {settings.db}"
        )
    print("point clients at it with:")
    print(f"  export CUEAPI_BASE_URL={base_url}")
    print(f"  export CUEAPI_API_KEY={key or 'cue_sk_...'}")
    print(f"web console: {base_url}/console/ (sign in with the API key)")
    if not settings.loopback:
        print(
            f"warning: listening on {settings.host}, reachable from other machines", file=sys.stderr
        )
    print(f"registration: {'open' if settings.registration_open else 'closed'}")
    if settings.metrics:
        print(f"metrics: {base_url}/metrics")
    sys.stdout.flush()


def _keys_create(args: argparse.Namespace) -> int:
    """`cuemsg keys create`: a new key for the database's development tenant."""
    from cuemsg.server.app import open_storage
    from cuemsg.server.keys import create_dev_key
    from cuemsg.server.settings import ServerSettings

    try:
        settings = ServerSettings.from_env(db=args.db)
    except ValueError as exc:
        raise UsageError(f"keys: {exc}") from None
    check_db(settings.db)
    if settings.db == ":memory:":  # the key would vanish with this process's database
        raise UsageError(
            "keys: --db :memory: is a database of its own that ends with this command; "
            "give the file or URL that `cuemsg serve --db` uses"
        )

    async def create() -> str:
        storage = open_storage(settings)
        await storage.open()
        try:
            return await create_dev_key(storage)
        finally:
            await storage.close()

    try:
        key = asyncio.run(create())
    except StorageOpenError as exc:  # one line: the file and what is wrong with it
        raise UsageError(f"keys: {exc}") from None
    print(
        f"new development API key for {settings.db} "
        "(shown once, stored hashed; earlier keys still work):"
    )
    print(key)
    return 0


class _QuietStartupFailure(logging.Filter):
    """Drops uvicorn's startup-failure records once `failed()` says why in a line of ours."""

    def __init__(self, failed: Callable[[], bool]) -> None:
        super().__init__()
        self.failed = failed

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.failed()


class _DemoNarration(logging.Filter):
    """Tells the demo's deliberate handler failure as part of the story, not as a WARNING."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not str(record.msg).startswith("handler failed"):
            return True
        _, _, error = record.getMessage().partition(": ")
        print(
            f"  writer: its handler raised {error} "
            "(on purpose: cuemsg sends the planner an error reply)"
        )
        return False


def _demo(args: argparse.Namespace) -> int:
    from cuemsg.mailbox.demo import run_demo

    narration = _DemoNarration()
    logger = logging.getLogger("cuemsg.mailbox")
    logger.addFilter(narration)
    try:
        run_demo()
    finally:
        logger.removeFilter(narration)
    return 0


def add_commands(sub: Any) -> None:
    """`serve` and `demo`."""
    serve = sub.add_parser(
        "serve",
        help="run the embedded CueAPI server",
        description=(
            "Run the embedded CueAPI server. It binds first, then prints its URL, a "
            "development API key and the export lines that point clients at it."
        ),
        epilog=EXIT_CODES,
    )
    serve.add_argument(
        "--db",
        default=None,
        help="SQLite file, :memory:, sqlite:///path or postgresql:// URL "
        "(env CUEMSG_DB; default cuemsg.db)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument(
        "--port", type=port_number, default=8787, help="port (default 8787; 0: a free one, printed)"
    )
    serve.add_argument("--lease-seconds", type=float, default=None, help="claim lease (60)")
    serve.add_argument(
        "--unclaimed-timeout", type=float, default=None, help="seconds to 'missed' (0 = never)"
    )
    serve.add_argument(
        "--sweep-interval", type=float, default=None, help="seconds between lease checks (0.5)"
    )
    serve.add_argument("--rate-limit", type=int, default=None, help="requests/min/tenant (0 = off)")
    serve.add_argument(
        "--no-extensions", action="store_true", help="serve the plain CueAPI contract only"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    add_webhook_options(serve)
    serve.add_argument(
        "--metrics",
        action="store_true",
        help="serve /metrics (Prometheus) beyond loopback too (on loopback it always is)",
    )
    serve.add_argument("--ssl-certfile", metavar="FILE", help="serve HTTPS with this certificate")
    serve.add_argument(
        "--ssl-keyfile", metavar="FILE", help="the certificate's private key (if not in it)"
    )
    serve.add_argument(
        "--registration",
        choices=("open", "closed"),
        default=None,
        help="POST /v1/auth/register (default: open on loopback, closed beyond)",
    )
    serve.add_argument(
        "--retention", default=None, help="keep settled executions this long (7d; 0 = for ever)"
    )
    serve.add_argument(
        "--dead-letter-retention", default=None, help="keep failed/missed ones (30d; 0 = for ever)"
    )
    serve.add_argument(
        "--quota-pending", type=int, default=None, help="unsettled executions/tenant (100000)"
    )
    serve.add_argument(
        "--quota-stored-bytes", type=int, default=None, help="payload bytes/tenant (1 GiB)"
    )
    serve.set_defaults(func=_serve)

    keys = sub.add_parser("keys", help="API keys of a local database")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    keys_create = keys_sub.add_parser(
        "create", help="print a new key for the development tenant (stored hashed)"
    )
    keys_create.add_argument(
        "--db", default=None, help="SQLite file or postgresql:// URL (env CUEMSG_DB; cuemsg.db)"
    )
    keys_create.set_defaults(func=_keys_create)

    demo = sub.add_parser("demo", help="two agents messaging through an in-process server")
    demo.set_defaults(func=_demo)
