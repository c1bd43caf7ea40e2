"""Which URLs the monitor sends webhooks to: the one place where a target is judged, when a subscription
is made and before every delivery, so that stricter rules (no private, loopback or link-local addresses
after DNS resolution: issue 9) are added here and nowhere else."""

from __future__ import annotations

from urllib.parse import urlsplit

MAX_URL_LENGTH = 2048


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
