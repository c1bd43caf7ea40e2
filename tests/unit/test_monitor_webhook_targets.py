"""Which webhook URLs the monitor accepts: absolute http(s) with a host, without credentials or fragment."""

from __future__ import annotations

import re

import pytest

from services.monitor.webhook_targets import InvalidTargetUrl, check_target_url


@pytest.mark.parametrize(
    "url",
    [
        "https://ci.example.com/hooks/flywheel",
        "http://127.0.0.1:9000/hook?token=abc",  # private targets wait for issue 9's SSRF rules
        "https://[::1]:8443/",
    ],
)
def test_http_and_https_urls_with_a_host_are_accepted(url: str) -> None:
    assert check_target_url(url) == url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/hook", "scheme must be http or https, not 'ftp'"),
        ("file:///etc/passwd", "scheme must be http or https"),
        ("example.com/hook", "scheme must be http or https, not 'none'"),
        ("https:///hook", "names no host"),
        ("https://user:secret@example.com/", "user name or password"),
        ("https://example.com/#part", "#fragment"),
        ("https://example.com:99999/", "does not parse"),
        ("https://example.com:0/", "port must be from 1 to 65535"),
        ("https://exa mple.com/", "whitespace or control characters"),
        ("https://example.com/\r\nX-Injected: 1", "whitespace or control characters"),
        ("https://example.com/" + "a" * 2100, "at most 2048"),
    ],
)
def test_other_urls_are_refused_saying_why(url: str, reason: str) -> None:
    with pytest.raises(InvalidTargetUrl, match=re.escape(reason)):
        check_target_url(url)
