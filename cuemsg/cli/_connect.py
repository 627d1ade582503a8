"""The connection options every client command takes, and the client they make."""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING, Any

from cuemsg._exceptions import MissingAPIKey
from cuemsg.cli._output import NO_KEY, UsageError

if TYPE_CHECKING:
    from cuemsg.cueapi import CueClient

#: The mailbox a command sends from when `--from` is not given.
DEFAULT_SENDER = "cli"


def make_client(args: argparse.Namespace) -> CueClient:
    """A `CueClient` from --api-key/--base-url, else the environment.

    Raises:
        MissingAPIKey: no key anywhere.
        UsageError: the base URL has no scheme (`127.0.0.1:8787`), or not http(s).
    """
    from cuemsg.cueapi import CueClient
    from cuemsg.cueapi._base import check_base_url

    key = args.api_key or os.environ.get("CUEAPI_API_KEY")
    if not key:
        raise MissingAPIKey(NO_KEY)
    url = args.base_url or os.environ.get("CUEAPI_BASE_URL") or None
    if url is not None and "://" not in url:
        raise UsageError(f"the base URL {url!r} has no scheme: add http:// (http://{url})")
    if url is not None:
        try:
            check_base_url(url)  # ftp://... : a usage error, not a traceback
        except ValueError as exc:
            raise UsageError(str(exc)) from None
    return CueClient(key, url)


def connection_options(group: Any, default: Any) -> None:
    """--api-key and --base-url: accepted before the command and after it.

    After it, their default is SUPPRESS, so that an absent option leaves the
    value given before the command in place.
    """
    group.add_argument("--api-key", default=default, help="CueAPI key (default: $CUEAPI_API_KEY)")
    group.add_argument(
        "--base-url",
        default=default,
        help="CueAPI URL (default: $CUEAPI_BASE_URL, else https://api.cueapi.ai)",
    )


def client_options() -> argparse.ArgumentParser:
    """The options every client command takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group("connection and output")
    connection_options(group, default=argparse.SUPPRESS)
    group.add_argument(
        "--json", action="store_true", help="print machine-readable JSON (errors too)"
    )
    return common


def positive(kind: Any, *, zero: bool = False) -> Any:
    """An argparse type: a number > 0 (>= 0 with `zero`)."""

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value < 0 or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(f"must be {'>=' if zero else '>'} 0, not {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse
