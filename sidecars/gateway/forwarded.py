"""The client's address behind trusted reverse proxies (``Forwarded``, ``X-Forwarded-For``).

Behind an ingress every request comes from the ingress's address: per-IP rate limits would
lump all clients together, and the admin cookie's IP allow-list would judge the ingress. A
proxy appends the address it received the request from to ``X-Forwarded-For`` (or a
``for=`` element to RFC 7239's ``Forwarded``), but anyone can send those headers too. So they
are read only when the peer is a trusted proxy (``[gateway] trusted_proxies``, CIDRs), and
from the right: each trusted hop is skipped, and the first address that is not trusted is the
client. A hop that is not an address (``unknown``, an obfuscated name, garbage) ends the walk
at the last trusted hop. With no trusted proxies configured the headers are ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

from aiohttp import web

from sidecars.gateway.errors import Handler

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def parse_networks(cidrs: Iterable[str]) -> tuple[Network, ...]:
    """Return the networks of ``cidrs``; a bad one raises ``ValueError`` naming it."""
    out = []
    for cidr in cidrs:
        try:
            out.append(ipaddress.ip_network(cidr.strip(), strict=False))
        except ValueError:
            raise ValueError(f"trusted_proxies: {cidr!r} is not an IP network") from None
    return tuple(out)


def _address(text: str) -> Address | None:
    """Return the address of a header hop (``1.2.3.4``, ``1.2.3.4:5678``, ``"[::1]:80"``)."""
    hop = text.strip().strip('"')
    if hop.startswith("["):  # [v6] or [v6]:port
        hop = hop[1:].split("]", 1)[0]
    elif hop.count(":") == 1:  # v4:port
        hop = hop.split(":", 1)[0]
    try:
        return ipaddress.ip_address(hop)
    except ValueError:
        return None


def _forwarded_for(header: str) -> list[str]:
    """Return the ``for=`` values of a ``Forwarded`` header, in order."""
    hops = []
    for element in header.split(","):
        for pair in element.split(";"):
            name, _, value = pair.partition("=")
            if name.strip().lower() == "for":
                hops.append(value)
    return hops


def client_address(
    peer: str | None,
    forwarded: str | None,
    x_forwarded_for: str | None,
    trusted: Sequence[Network],
) -> str | None:
    """Return the client's address: ``peer``, or the nearest untrusted forwarded hop."""
    if not trusted or peer is None:
        return peer
    current = _address(peer)
    if current is None or not any(current in net for net in trusted):
        return peer  # not from a proxy we trust: its headers are the client's words
    if forwarded:
        hops = _forwarded_for(forwarded)
    elif x_forwarded_for:
        hops = x_forwarded_for.split(",")
    else:
        return peer
    for hop in reversed(hops):
        address = _address(hop)
        if address is None:
            break
        current = address
        if not any(address in net for net in trusted):
            break
    return str(current)


def forwarded_middleware(trusted: Sequence[Network]) -> web.middleware:  # type: ignore[valid-type]
    """Return a middleware that sets ``request.remote`` to the client behind trusted proxies."""

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted:
            client = client_address(
                request.remote,
                request.headers.get("Forwarded"),
                request.headers.get("X-Forwarded-For"),
                trusted,
            )
            if client is not None and client != request.remote:
                request = request.clone(remote=client)
        return await handler(request)

    return middleware
