"""The `cuemsg` command line (also `python -m cuemsg`). The only place logging is set up."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence

from cuemsg import __version__


def _serve(args: argparse.Namespace) -> int:
    from cuemsg.server.app import create_app, ensure_dev_key, open_storage
    from cuemsg.server.run import Uvicorn
    from cuemsg.server.settings import ServerSettings

    try:
        settings = ServerSettings.from_env(
            db=args.db,
            lease_seconds=args.lease_seconds,
            unclaimed_timeout=args.unclaimed_timeout,
            rate_limit=args.rate_limit,
            sweep_interval=args.sweep_interval,
            extensions=False if args.no_extensions else None,
            access_log=args.access_log or None,
        )
    except ValueError as exc:
        print(f"cuemsg serve: {exc}", file=sys.stderr)
        return 2
    storage = open_storage(settings)

    async def dev_key() -> str:
        await storage.open()
        try:
            return await ensure_dev_key(storage)
        finally:
            await storage.close()

    key = asyncio.run(dev_key())
    host = args.host
    url_host = f"[{host}]" if ":" in host else host
    base_url = f"http://{url_host}:{args.port}"
    print(f"cuemsg {__version__} serving CueAPI on {base_url} (db: {settings.db})")
    print(f"development API key: {key}")
    print("point clients at it with:")
    print(f"  export CUEAPI_BASE_URL={base_url}")
    print(f"  export CUEAPI_API_KEY={key}")
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {host}, reachable from other machines", file=sys.stderr)
    sys.stdout.flush()
    server = Uvicorn(
        create_app(settings),
        host=host,
        port=args.port,
        log_level="info" if args.access_log else "warning",
        access_log=settings.access_log,
    )
    server.run()
    return 0


def _demo(args: argparse.Namespace) -> int:
    from cuemsg.mailbox.demo import run_demo

    run_demo()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cuemsg", description="Accountable messaging between AI agents on CueAPI."
    )
    parser.add_argument("--version", action="version", version=f"cuemsg {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at DEBUG level")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the embedded CueAPI server")
    serve.add_argument(
        "--db",
        default=None,
        help="SQLite file, :memory:, or postgresql:// URL (env CUEMSG_DB; default cuemsg.db)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="interface (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8787, help="port (default 8787)")
    serve.add_argument("--lease-seconds", type=float, default=None, help="claim lease (60)")
    serve.add_argument(
        "--unclaimed-timeout", type=float, default=None, help="seconds to 'missed' (0 = never)"
    )
    serve.add_argument(
        "--sweep-interval", type=float, default=None, help="seconds between lease checks (0.5)"
    )
    serve.add_argument("--rate-limit", type=int, default=None, help="requests/min/key (0 = off)")
    serve.add_argument(
        "--no-extensions", action="store_true", help="serve the plain CueAPI contract only"
    )
    serve.add_argument("--access-log", action="store_true", help="log every request")
    serve.set_defaults(func=_serve)

    demo = sub.add_parser("demo", help="two agents messaging through an in-process server")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
