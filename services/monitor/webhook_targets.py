"""Which URLs the monitor sends webhooks to: the one place where a target is judged, when a subscription
is made and before every delivery.

A URL must be absolute http(s) without credentials (`check_target_url`). Then, against server-side request
forgery (a webhook aimed at the platform's own network: its database, a cloud metadata endpoint), the
`WebhookTargets` policy refuses hosts that are, or resolve to, anything but a public address (loopback,
private, link-local, shared, reserved), unless the allow-list names the host or a network holding the
address. Host names are resolved at every delivery, every address they resolve to is checked, and the POST
goes to the address that was checked (so a name that resolves elsewhere a moment later gains nothing).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

MAX_URL_LENGTH = 2048
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]
ALLOW_SETTING = "FLYWHEEL_MONITOR_WEBHOOK_ALLOWED_TARGETS"


class InvalidTargetUrl(ValueError):
    """A webhook URL the monitor will not send to; the message says why."""


def check_target_url(url: str) -> str:
    """`url` itself if the monitor may POST to it: absolute http(s) with a host and a valid port, no user
    name or password (they would be shown and logged with the URL; deliveries are signed instead), no
    fragment, no whitespace or control characters. InvalidTargetUrl otherwise."""
    if len(url) > MAX_URL_LENGTH:
        raise InvalidTargetUrl(
            f"the URL is {len(url)} characters long; at most {MAX_URL_LENGTH} are accepted"
        )
    if any(character.isspace() or ord(character) < 0x20 or ord(character) == 0x7F for character in url):
        raise InvalidTargetUrl("the URL contains whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number from 0 to 65535
    except ValueError as error:
        raise InvalidTargetUrl(f"the URL does not parse: {error}") from error
    if parts.scheme not in ("http", "https"):
        raise InvalidTargetUrl(f"the URL's scheme must be http or https, not {parts.scheme or 'none'!r}")
    if not parts.hostname:
        raise InvalidTargetUrl("the URL names no host")
    if parts.username is not None or parts.password is not None:
        raise InvalidTargetUrl(
            "the URL must not carry a user name or password; deliveries are signed instead"
        )
    if parts.fragment:
        raise InvalidTargetUrl("the URL must not have a #fragment")
    if port == 0:
        raise InvalidTargetUrl("the URL's port must be from 1 to 65535")
    return url


async def resolve_host(host: str, port: int) -> list[str]:
    """Every address `host` resolves to now (what a connection to it could reach)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class PinnedTarget:
    """Where one delivery goes: the URL with its host replaced by the checked address, and what to tell the
    server (Host header, TLS server name) so that it still sees the name the subscriber gave."""

    url: str
    host_header: str
    server_name: str


class WebhookTargets:
    """The SSRF policy: with `deny_internal`, hosts that are or resolve to a non-public address are refused
    unless `allowed` names the host or a network (CIDR) holding the address."""

    def __init__(
        self, *, deny_internal: bool, allowed: Iterable[str] = (), resolver: Resolver = resolve_host
    ) -> None:
        self.deny_internal = deny_internal
        self.allowed_hosts: set[str] = set()
        self.allowed_networks: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
        for entry in allowed:
            try:
                self.allowed_networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.allowed_hosts.add(entry.lower().rstrip("."))
        self.resolver = resolver

    def check_url(self, url: str) -> str:
        """`url` if it is well formed and does not name a non-public address itself (an IP literal or
        `localhost`): what can be judged without resolving names, when a subscription is made."""
        host = _host_of(check_target_url(url))
        if not self._checks(host):
            return url
        literal = _ip_literal(host)
        if literal is not None:
            self._check_address(host, literal)
        elif host == "localhost" or host.endswith(".localhost"):
            raise InvalidTargetUrl(f"{host} is a loopback name; {_how_to_allow()}")
        return url

    async def pin(self, url: str) -> PinnedTarget:
        """Resolve the URL's host, check every address it resolves to, and aim the request at the first.
        InvalidTargetUrl for a refused address; OSError when the name does not resolve."""
        self.check_url(url)
        parts = urlsplit(url)
        host = _host_of(url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        literal = _ip_literal(host)
        addresses = (
            [literal] if literal is not None else [_address(text) for text in await self.resolver(host, port)]
        )
        if not addresses:
            raise OSError(f"{host} resolves to no address")
        if self._checks(host):
            for address in addresses:
                self._check_address(host, address)
        first = addresses[0]
        netloc = f"[{first}]" if first.version == 6 else str(first)
        if parts.port is not None:
            netloc += f":{parts.port}"
        pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        return PinnedTarget(pinned, host_header=parts.netloc, server_name=host)

    def _checks(self, host: str) -> bool:
        return self.deny_internal and host not in self.allowed_hosts

    def _check_address(self, host: str, address: IPAddress) -> None:
        if address.is_global and not address.is_multicast:
            return
        if any(address in network for network in self.allowed_networks):
            return
        shown = host if host == str(address) else f"{host} ({address})"
        raise InvalidTargetUrl(f"{shown} is {_kind(address)} address; {_how_to_allow()}")


def _host_of(url: str) -> str:
    hostname = urlsplit(url).hostname
    assert hostname is not None  # check_target_url made sure
    return hostname.lower().rstrip(".")


def _ip_literal(host: str) -> IPAddress | None:
    try:
        return _address(host)
    except ValueError:
        return None


def _address(text: str) -> IPAddress:
    address = ipaddress.ip_address(text.split("%", 1)[0])  # an IPv6 zone (fe80::1%eth0) is no part of it
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    return address


def _kind(address: IPAddress) -> str:
    if address.is_unspecified:
        return "an unspecified"
    if address.is_loopback:
        return "a loopback"
    if address.is_link_local:
        return "a link-local"
    if address.is_private:
        return "a private"
    if address.is_multicast:
        return "a multicast"
    return "a non-public"


def _how_to_allow() -> str:
    return (
        "webhooks may only reach public addresses, unless the host or its network is listed in "
        f"{ALLOW_SETTING}"
    )
