"""Which webhook URLs the monitor accepts: absolute http(s) with a host, without credentials or fragment, and
(against server-side request forgery) only public addresses unless allow-listed."""

from __future__ import annotations

import re

import pytest

from services.monitor.webhook_targets import InvalidTargetUrl, WebhookTargets, check_target_url


@pytest.mark.parametrize(
    "url",
    [
        "https://ci.example.com/hooks/flywheel",
        "http://127.0.0.1:9000/hook?token=abc",  # well formed; WebhookTargets judges its address
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


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://127.0.0.1:9000/hook", "127.0.0.1 is a loopback address"),
        ("http://[::1]/hook", "::1 is a loopback address"),
        ("http://[::ffff:127.0.0.1]/hook", "is a loopback address"),
        ("http://10.1.2.3/hook", "10.1.2.3 is a private address"),
        ("http://192.168.0.10/hook", "is a private address"),
        ("http://169.254.169.254/latest/meta-data/", "169.254.169.254 is a link-local address"),
        ("http://100.64.0.1/hook", "is a non-public address"),
        ("http://0.0.0.0:8080/", "0.0.0.0 is an unspecified address"),
        ("http://localhost:8081/models", "localhost is a loopback name"),
    ],
)
def test_internal_addresses_are_refused_by_default(url: str, reason: str) -> None:
    with pytest.raises(InvalidTargetUrl, match=re.escape(reason)):
        WebhookTargets(deny_internal=True).check_url(url)


def test_public_addresses_and_names_are_accepted_without_resolving_them() -> None:
    targets = WebhookTargets(deny_internal=True)
    assert targets.check_url("https://93.184.215.14/hook") == "https://93.184.215.14/hook"
    assert targets.check_url("https://ci.example.com/hook") == "https://ci.example.com/hook"


def test_the_allow_list_names_hosts_and_networks() -> None:
    targets = WebhookTargets(deny_internal=True, allowed=["127.0.0.1", "10.1.0.0/16", "Hooks.Internal"])
    for url in ["http://127.0.0.1:9000/", "http://10.1.200.3/", "http://hooks.internal/"]:
        assert targets.check_url(url) == url
    with pytest.raises(InvalidTargetUrl):
        targets.check_url("http://10.2.0.1/")
    assert WebhookTargets(deny_internal=False).check_url("http://127.0.0.1/") == "http://127.0.0.1/"


async def test_every_address_a_name_resolves_to_is_checked_and_the_first_is_pinned() -> None:
    async def resolve(host: str, port: int) -> list[str]:
        assert port == 8443
        return {
            "ok.example.com": ["93.184.215.14", "2606:2800::1"],
            "rebound.example.com": ["93.184.215.14", "::1"],
        }[host]

    targets = WebhookTargets(deny_internal=True, resolver=resolve)
    pinned = await targets.pin("https://ok.example.com:8443/hook?x=1")
    assert pinned.url == "https://93.184.215.14:8443/hook?x=1"
    assert (pinned.host_header, pinned.server_name) == ("ok.example.com:8443", "ok.example.com")
    with pytest.raises(InvalidTargetUrl, match=re.escape("rebound.example.com (::1) is a loopback address")):
        await targets.pin("https://rebound.example.com:8443/hook")
