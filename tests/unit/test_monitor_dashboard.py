"""The dashboard's HTML routes: one self-contained page per model that loads nothing from other sites, and
an index of the models the monitor has seen."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from services.monitor.dashboard import MonitoredModel, monitored_models, router

SVG_NAMESPACE = "http://www.w3.org/2000/svg"


@pytest.fixture
def models() -> list[MonitoredModel]:
    return []


@pytest.fixture
def client(models: list[MonitoredModel]) -> Iterator[TestClient]:
    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[monitored_models] = lambda: models
    with TestClient(app) as client:
        yield client


def test_a_models_page_is_html_with_its_script_and_style_inline(client: TestClient) -> None:
    response = client.get("/dashboard/credit")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    page = response.text
    assert page.startswith("<!doctype html>")
    assert 'data-model="credit"' in page
    assert "<title>credit: Flywheel monitor</title>" in page
    [script] = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    assert "../models/${encodeURIComponent(MODEL)}/timeline" in script
    assert "setTimeout(load, REFRESH_MS)" in script
    assert "const REFRESH_MS = 10000;" in script


def test_a_models_page_loads_nothing_from_anywhere_else(client: TestClient) -> None:
    response = client.get("/dashboard/credit")
    page = response.text

    assert not re.search(r"<script[^>]*\bsrc=|<link\b|<img\b|<iframe\b|@import|url\(", page)
    # The only absolute URL is the SVG namespace, a name rather than something to fetch.
    assert set(re.findall(r"(?:https?:)?//[\w.-]+\.[a-z]{2,}[^\s\"'`)]*", page)) == {SVG_NAMESPACE}
    # And the browser is told so: the page may talk to this monitor only, and run its own script only.
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["connect-src"] == "'self'"
    [script] = re.findall(r"<script>(.*?)</script>", page, flags=re.DOTALL)
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    assert policy["script-src"] == f"'sha256-{digest}'"


def test_a_model_name_is_escaped_into_the_page(client: TestClient) -> None:
    page = client.get('/dashboard/a"<b>').text

    assert 'data-model="a&quot;&lt;b&gt;"' in page
    assert "<b>" not in page


@pytest.mark.parametrize(
    "models",
    [
        [
            MonitoredModel(
                model="credit", windows=12, last_seen=datetime(2026, 11, 23, 15, 0, tzinfo=UTC), open_alerts=1
            ),
            MonitoredModel(model="fraud detection", windows=0, last_seen=None, open_alerts=0),
        ]
    ],
)
def test_the_index_links_every_model_with_its_windows_and_open_alerts(client: TestClient) -> None:
    response = client.get("/dashboard")

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'none'" in response.headers["content-security-policy"]
    page = response.text
    assert '<a href="dashboard/credit">credit</a>' in page
    assert '<a href="dashboard/fraud%20detection">fraud detection</a>' in page
    assert '<td class="alerting">1</td>' in page
    assert '<time datetime="2026-11-23T15:00:00+00:00">2026-11-23 15:00:00</time>' in page
    assert "<script" not in page


def test_the_index_without_models_says_there_is_no_traffic_yet(client: TestClient) -> None:
    page = client.get("/dashboard").text

    assert "No traffic yet" in page
    assert "<table" not in page
