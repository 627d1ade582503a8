"""The SSRF guard of webhook URLs: a webhook may only reach public addresses.

A URL whose host resolves to a private, link-local (cloud metadata included),
loopback, multicast or otherwise non-global address is refused, when a cue is
created and again at each delivery (DNS can change in between). Two
exceptions: loopback when the server itself listens on loopback only (local
development: the receiver is on the same machine), and the CIDR ranges of
`--webhook-allow`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

_METADATA = {ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254")}


class UrlRefused(Exception):
    """A webhook URL the guard will not call; the message says why."""


class Guard:
    """Checks webhook URLs against the rules above.

    Args:
        loopback_ok: allow loopback addresses (the server is bound to loopback).
        allow: CIDR ranges allowed whatever they are.
    """

    def __init__(self, *, loopback_ok: bool, allow: Iterable[str] = ()) -> None:
        self.loopback_ok = loopback_ok
        self.allow: tuple[IPNetwork, ...] = tuple(
            ipaddress.ip_network(cidr, strict=False) for cidr in allow
        )

    def refusal(self, address: IPAddress) -> str | None:
        """Why `address` may not be called, or None when it may."""
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        if any(address in net for net in self.allow):
            return None
        if address in _METADATA:
            return "a cloud metadata address"
        if address.is_loopback:
            if self.loopback_ok:
                return None
            return "a loopback address (allowed only when the server listens on loopback)"
        if address.is_link_local:
            return "a link-local address"
        if address.is_private:
            return "a private address"
        if not address.is_global or address.is_multicast:
            return "not a public address"
        return None

    async def check(self, url: str, *, must_resolve: bool = True) -> list[str]:
        """Resolve `url`'s host and check every address it has; the addresses.

        With `must_resolve=False` (a cue being created), a host that does not
        resolve yet passes: it is checked again at each delivery.

        Raises:
            UrlRefused: not http(s), no host, does not resolve, or an address
                the rules refuse (named with the reason).
        """
        try:
            parts = urlsplit(url)
        except ValueError:  # e.g. a bracketed host that is no IPv6 address
            raise UrlRefused(f"{url!r} is not a valid URL") from None
        if parts.scheme not in ("http", "https"):
            raise UrlRefused(f"{url!r} is not an http or https URL")
        host = parts.hostname
        if not host:
            raise UrlRefused(f"{url!r} has no host")
        if "[" in parts.netloc and not _ipv6(host):  # urlsplit checks this from 3.11 only
            raise UrlRefused(f"{url!r} is not a valid URL")
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError:
            raise UrlRefused(f"{url!r} has an invalid port") from None
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port, type=socket.SOCK_STREAM
            )
        except (socket.gaierror, UnicodeError) as exc:
            if not must_resolve:
                return []
            raise UrlRefused(f"host {host!r} does not resolve ({exc})") from None
        addresses = sorted({str(info[4][0]) for info in infos})
        for text in addresses:
            reason = self.refusal(ipaddress.ip_address(text.split("%")[0]))
            if reason is not None:
                raise UrlRefused(
                    f"host {host!r} resolves to {text}, {reason}; "
                    "allow a range with --webhook-allow CIDR"
                )
        return addresses


def _ipv6(host: str) -> bool:
    """Whether a bracketed URL host is an IPv6 address (a `%zone` allowed)."""
    try:
        ipaddress.IPv6Address(host.split("%")[0])
    except ValueError:
        return False
    return True
