"""The monitor's dashboard in headless Chromium (Debian's package).

On the real servers: half an hour of traffic (two versions, a shift in the middle) and late ground truth
go through Kafka into a monitor process; its dashboard page, opened in Chromium, draws what its timeline
says: a bar per version and minute, latency points, the confidence histogram, every feature's statistic
per window with the drifted windows marked, the performance windows with the dropped ones marked, and the
alerts and retrain request on the timeline strip. A screenshot is taken. With a stand-in timeline: the
states real traffic does not reach here (a regressor's page, missing percentiles, an unanswered fetch)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import shutil
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from services.monitor.dashboard import router as dashboard_router
from shared.artifacts import S3ArtifactStore
from shared.bus import KafkaBus
from shared.events import CloudEvent, GroundTruth, Topic
from shared.prediction_events import logged_request, prediction_logged_json
from tests.conftest import Infrastructure
from tests.integration.conftest import KafkaBusFactory, fresh_namespace, registry_with_profiled_model
from tests.monitor_data import FEATURES, NUMERIC, traffic
from tests.processes import ServiceProcess, free_port
from tests.waiting import eventually_true

CHROMIUM_HINT = (
    "the dashboard's tests need Debian's headless Chromium: `make tools` installs it (as root), or "
    "`apt-get install -y --no-install-recommends chromium`"
)
WINDOW_ROWS = 1000
LABELS_PER_WINDOW = 200
POLICY = {
    "drift": {"window": {"max_rows": WINDOW_ROWS, "max_seconds": None}},
    "alerts": {"recovery_windows": 2},
    "retrain": {"on_drift": True, "on_performance_drop": True, "cooldown_seconds": 3600},
    "performance": {"window_labels": LABELS_PER_WINDOW, "max_drop": 0.05},
}


# ---------------------------------------------------------------- the browser


class Chromium:
    """Debian's chromium, headless: the DOM after the page's scripts ran, and screenshots."""

    def __init__(self, binary: str, profile: Path) -> None:
        self.binary = binary
        self.profile = profile

    def _run(self, url: str, *options: str) -> str:
        command = [
            self.binary,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            f"--user-data-dir={self.profile}",
            # Virtual time runs the page's timers but waits for its fetches: the charts are drawn before
            # the DOM is read, and the 10 s refresh is not reached.
            "--virtual-time-budget=5000",
            *options,
            url,
        ]
        done = subprocess.run(command, capture_output=True, timeout=120, check=False)
        assert done.returncode == 0, done.stderr.decode(errors="replace")[-3000:]
        return done.stdout.decode()

    def dom(self, url: str) -> Page:
        return Page(self._run(url, "--dump-dom"))

    def screenshot(self, url: str, path: Path, width: int = 1400, height: int = 2700) -> Path:
        self._run(url, f"--screenshot={path}", f"--window-size={width},{height}", "--hide-scrollbars")
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
        return path


@pytest.fixture(scope="module")
def chromium(tmp_path_factory: pytest.TempPathFactory) -> Chromium:
    """Headless Chromium, or a failure saying how to install it (never a skip)."""
    binary = shutil.which("chromium") or shutil.which("chromium-browser")
    if binary is None:
        pytest.fail(f"chromium is not installed; {CHROMIUM_HINT}")
    return Chromium(binary, tmp_path_factory.mktemp("chromium-profile"))


class Page(HTMLParser):
    """A rendered page: the body's attributes, each chart's elements (by its `data-chart`), the text."""

    def __init__(self, dom: str) -> None:
        super().__init__()
        self.dom = dom
        self.body: dict[str, str] = {}
        self.charts: dict[str, list[tuple[str, dict[str, str]]]] = {}
        self.texts: list[str] = []
        self._chart: str | None = None
        self.feed(dom)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "body":
            self.body = found
        if tag == "svg":
            self._chart = found.get("data-chart", "")
            self.charts[self._chart] = [(tag, found)]
        elif self._chart is not None:
            self.charts[self._chart].append((tag, found))

    def handle_endtag(self, tag: str) -> None:
        if tag == "svg":
            self._chart = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.texts).split())

    def elements(self, chart: str, tag: str, *classes: str) -> list[dict[str, str]]:
        """The chart's `tag` elements that carry every one of `classes`."""
        assert chart in self.charts, f"no chart {chart!r}; charts: {sorted(self.charts)}"
        return [
            attrs
            for name, attrs in self.charts[chart]
            if name == tag and set(classes) <= set(attrs.get("class", "").split())
        ]


# ---------------------------------------------------------------- the monitor on the real servers


@dataclass
class Sent:
    """What the test sent: rows per version, and how many labels."""

    rows: dict[int, int]
    labels: int


@dataclass
class Monitor:
    url: str
    client: httpx.AsyncClient
    bus: KafkaBus

    async def timeline(self) -> dict[str, Any]:
        response = await self.client.get("/models/credit/timeline", params={"hours": 24})
        assert response.status_code == 200, response.text
        timeline: dict[str, Any] = response.json()
        return timeline


@pytest.fixture
async def monitor(
    infrastructure: Infrastructure,
    fresh_database_url: str,
    kafka_bus_factory: KafkaBusFactory,
    s3_store: S3ArtifactStore,
    tmp_path: Path,
) -> AsyncIterator[Monitor]:
    """A registry and a monitor, as processes, with two versions of `credit` and the test's policy."""
    namespace = fresh_namespace()
    environment = infrastructure.isolated_environment(fresh_database_url, namespace)
    async with registry_with_profiled_model(
        infrastructure, fresh_database_url, namespace, s3_store, tmp_path, versions=2
    ) as registry:
        monitor_process = ServiceProcess(
            "monitor",
            {
                **environment,
                "FLYWHEEL_MONITOR_REGISTRY_URL": registry.url,
                "FLYWHEEL_MONITOR_WINDOW_CHECK_SECONDS": "0.5",
            },
            tmp_path / "monitor.log",
        ).start()
        try:
            monitor_process.wait_until_ready()
            bus = await kafka_bus_factory(namespace=namespace)
            async with httpx.AsyncClient(base_url=monitor_process.url, timeout=30) as client:
                assert (await client.put("/models/credit/policy", json=POLICY)).status_code == 200
                yield Monitor(monitor_process.url, client, bus)
        finally:
            monitor_process.stop()


async def send_half_an_hour(monitor: Monitor, start: datetime) -> Sent:
    """Version 1 for 26 minutes, 500 rows a minute: 16 clean, 6 shifted, 4 clean again (13 windows);
    version 2 as a canary, 200 clean rows a minute in minutes 22 to 26 (one window). Then one label for
    each of the first 100 rows of version 1's minutes, arriving late: 95% right while the inputs are
    clean, 65% during the shift (three of 13 performance windows dropped)."""
    rng = np.random.default_rng(11)
    predicted: list[tuple[str, int, bool, datetime]] = []  # request id, label, shifted, minute
    rows = {1: 0, 2: 0}
    for minute in range(27):
        at = start + timedelta(minutes=minute)
        shifted = 16 <= minute < 22
        for version, count in [(1, 500 if minute < 26 else 0), (2, 200 if minute >= 22 else 0)]:
            if not count:
                continue
            frame = traffic(
                count, seed=100 * minute + version, mean_shift=1.0 if shifted and version == 1 else 0
            )
            ids, labels = await send_minute(monitor.bus, frame, version, at, rng, f"m{minute}-v{version}")
            rows[version] += count
            if version == 1:
                predicted += [
                    (request, label, shifted, at) for request, label in zip(ids[:100], labels, strict=False)
                ]
    await eventually_true(lambda: judged(monitor, 14), within=90, what="14 windows judged")
    truths = []
    for index, (request_id, label, shifted, at) in enumerate(predicted):
        wrong = index % 100 < (35 if shifted else 5)
        truth = GroundTruth(
            request_id=request_id,
            label=1 - label if wrong else label,
            model="credit",
            observed_at=at + timedelta(seconds=50),
        )
        truths.append(CloudEvent.wrap(truth, source="/tests/labels"))
    for chunk in range(0, len(truths), 200):
        await asyncio.gather(
            *(
                monitor.bus.publish(Topic.GROUND_TRUTH, event, key="credit")
                for event in truths[chunk : chunk + 200]
            )
        )
    return Sent(rows, len(truths))


async def send_minute(
    bus: KafkaBus, frame: pd.DataFrame, version: int, at: datetime, rng: np.random.Generator, prefix: str
) -> tuple[list[str], list[int]]:
    """One minute of one version as serving logs it: one event, requests of 20 rows answered in about 2 ms
    (a slow one now and then); the id and predicted label of every row."""
    per_request = 20
    requests = []
    ids: list[str] = []
    for index in range(len(frame) // per_request):
        request_id = f"{prefix}-{index}"
        latency = float(rng.lognormal(math.log(2.0), 0.5)) * (8 if rng.random() < 0.02 else 1)
        requests.append(logged_request(request_id, per_request, latency, at + timedelta(seconds=index * 0.1)))
        ids += [request_id] + [f"{request_id}:{row}" for row in range(1, per_request)]
    probabilities = rng.random(len(frame))  # like the reference's: no prediction drift
    labels = (probabilities > 0.7).astype(np.int64)
    inputs = {
        column: (
            frame[column].to_numpy(dtype=np.float64)
            if column in NUMERIC
            else frame[column].to_numpy(dtype=object)
        ).reshape(-1, 1)
        for column in FEATURES
    }
    event = prediction_logged_json(
        model="credit",
        version=version,
        requests=requests,
        inputs=inputs,
        outputs={"label": labels, "probabilities": np.column_stack([1 - probabilities, probabilities])},
        source="/tests",
    )
    await bus.publish_raw(Topic.PREDICTION_LOGGED, event, key=b"credit")
    return ids, [int(label) for label in labels]


async def judged(monitor: Monitor, windows: int) -> bool:
    response = await monitor.client.get("/models/credit/reports", params={"page_size": 1000})
    return len(response.json()["reports"]) >= windows


async def test_the_dashboard_draws_traffic_drift_performance_alerts_and_retrains(
    monitor: Monitor, chromium: Chromium, tmp_path: Path
) -> None:
    start = (datetime.now(UTC) - timedelta(minutes=32)).replace(second=0, microsecond=0)
    sent = await send_half_an_hour(monitor, start)

    async def complete() -> bool:
        timeline = await monitor.timeline()
        rows = {version: 0 for version in sent.rows}
        for minute in timeline["traffic"]:
            rows[minute["version"]] += minute["rows"]
        return (
            rows == sent.rows
            and len(timeline["performance"]) == sent.labels // LABELS_PER_WINDOW
            and {alert["kind"] for alert in timeline["alerts"]} == {"data", "performance"}
            and len(timeline["retrains"]) == 1
        )

    await eventually_true(complete, within=90, what="the timeline holding every minute, label and alert")
    timeline = await monitor.timeline()

    page = chromium.dom(f"{monitor.url}/dashboard/credit")
    assert page.body["data-state"] == "ready", page.text[:2000]
    assert page.body["data-model"] == "credit"
    # Every chart is an image with a title and a description for screen readers.
    for chart, elements in page.charts.items():
        svg = elements[0][1]
        assert svg["role"] == "img", chart
        assert {tag for tag, _ in elements} >= {"title", "desc"}, chart

    # Volume: one bar per minute and version, as many as the timeline has.
    bars = page.elements("volume", "rect", "bar")
    assert len(bars) == len(timeline["traffic"])
    assert {bar["data-version"] for bar in bars} == {"1", "2"}
    assert len([bar for bar in bars if bar["data-version"] == "2"]) == 5
    # Latency: p50, p95 and p99 per minute and version.
    for percentile in ("p50", "p95", "p99"):
        assert len(page.elements("latency", "circle", "point", f"latency-{percentile}")) == len(
            timeline["traffic"]
        )
    # Confidence: the histogram of the highest class probability, from 0.5 up.
    assert len(page.elements("confidence", "rect", "bar")) == 10

    # Drift: the share per window, and per feature the statistic, its threshold and the drifted windows.
    windows = timeline["windows"]
    assert len(windows) == 14
    assert len(page.elements("drift-share", "circle", "point")) == 14
    assert len(page.elements("drift-share", "circle", "drifted")) == sum(w["dataset_drift"] for w in windows)
    for feature in FEATURES:
        points = page.elements(f"drift-{feature}", "circle", "point")
        assert len(points) == 14, feature
        assert page.elements(f"drift-{feature}", "path", "threshold"), feature
    drifted_income = [w for w in windows if w["features"]["income"]["drifted"]]
    assert len(drifted_income) >= 3
    assert len(page.elements("drift-income", "circle", "drifted")) == len(drifted_income)

    # Performance: accuracy per window of labels, against its baseline, the shifted ones dropped.
    performance = timeline["performance"]
    assert len(page.elements("performance-accuracy", "circle", "point")) == len(performance)
    assert len(page.elements("performance-accuracy", "circle", "dropped")) == sum(
        p["dropped"] for p in performance
    )
    assert sum(p["dropped"] for p in performance) == 3
    assert page.elements("performance-accuracy", "path", "baseline")

    # The timeline strip: every alert episode, coloured by severity, and the retrain request.
    spans = page.elements("events", "g", "alert-span")
    assert sorted(int(span["data-alert-id"]) for span in spans) == sorted(a["id"] for a in timeline["alerts"])
    assert {kind for span in spans for kind in span["class"].split() if kind.startswith("kind-")} == {
        "kind-data",
        "kind-performance",
    }
    markers = page.elements("events", "g", "retrain-marker")
    assert [marker["data-event-id"] for marker in markers] == [timeline["retrains"][0]["event_id"]]
    assert page.elements("volume", "rect", "alert-band")  # the episodes behind the other charts too

    screenshot = chromium.screenshot(f"{monitor.url}/dashboard/credit", tmp_path / "dashboard-credit.png")
    print(f"\nthe dashboard's screenshot: {screenshot}")
    assert screenshot.stat().st_size > 50_000

    index = chromium.dom(f"{monitor.url}/dashboard")
    assert 'href="dashboard/credit"' in index.dom
    empty = chromium.dom(f"{monitor.url}/dashboard/nobody")
    assert empty.body["data-state"] == "ready"
    assert not empty.charts
    assert "No traffic yet for nobody" in empty.text


# ---------------------------------------------------------------- a stand-in timeline


def stand_in_timeline() -> dict[str, Any]:
    """A regressor's timeline: no class probabilities, a minute without a p99, a feature that could not
    be compared in one window, RMSE dropping, an alert still open, no retrain request."""
    now = datetime.now(UTC).replace(second=0, microsecond=0)

    def at(minutes: int) -> str:
        return (now - timedelta(minutes=minutes)).isoformat()

    return {
        "model": "prices",
        "traffic": [
            {
                "minute": at(10 - minute),
                "version": 3,
                "rows": 100 + minute,
                "latency_ms": {"p50": 1.0, "p95": 2.0, "p99": None if minute == 4 else 5.0},
                "confidence": None,
            }
            for minute in range(10)
        ],
        "windows": [
            {
                "version": 3,
                "window_start": at(10 - 2 * index),
                "window_end": at(8 - 2 * index),
                "rows": 200,
                "drift_share": 0.5 * (index == 4),
                "dataset_drift": index == 4,
                "features": {
                    "area": {
                        "method": "psi",
                        "statistic": 0.02 + 0.2 * (index == 4),
                        "threshold": 0.1,
                        "drifted": index == 4,
                    },
                    "rooms": {
                        "method": "ks",
                        "statistic": None if index == 0 else 0.5,
                        "threshold": 0.05,
                        "drifted": False,
                    },
                },
                "prediction_drift": None,
            }
            for index in range(5)
        ],
        "alerts": [
            {
                "id": 7,
                "version": 3,
                "kind": "performance",
                "severity": "critical",
                "opened_at": at(2),
                "closed_at": None,
            }
        ],
        "retrains": [],
        "performance": [
            {
                "version": 3,
                "window_end": at(8 - 2 * index),
                "labels": 50,
                "metric": "rmse",
                "value": 10.0 + 8 * (index >= 3),
                "baseline": 10.0,
                "dropped": index >= 3,
            }
            for index in range(5)
        ],
    }


@contextlib.contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """`app` on a free port of 127.0.0.1 in a thread of its own; yields its URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the stand-in monitor did not start within 10 s"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_the_page_shows_a_regressor_missing_values_and_an_unanswered_fetch(chromium: Chromium) -> None:
    app = FastAPI()
    app.include_router(dashboard_router)

    @app.get("/models/{name}/timeline")
    async def timeline(name: str) -> JSONResponse:
        if name == "prices":
            return JSONResponse(stand_in_timeline())
        return JSONResponse({"detail": "the database does not answer"}, status_code=503)

    with serving(app) as url:
        page = chromium.dom(f"{url}/dashboard/prices")
        broken = chromium.dom(f"{url}/dashboard/broken")

    assert page.body["data-state"] == "ready", page.text[:2000]
    assert "confidence" not in page.charts
    assert "no class probabilities" in page.text
    assert len(page.elements("latency", "circle", "latency-p99")) == 9
    assert len(page.elements("drift-rooms", "circle", "point")) == 4
    assert "drift below 0.05" in page.text  # a p-value: drift when it falls below the threshold
    assert len(page.elements("drift-area", "circle", "drifted")) == 1
    assert len(page.elements("performance-rmse", "circle", "dropped")) == 2
    [span] = page.elements("events", "g", "alert-span", "severity-critical", "kind-performance")
    assert span["data-alert-id"] == "7"
    assert not page.elements("events", "g", "retrain-marker")

    assert broken.body["data-state"] == "error"
    assert "Could not load the timeline" in broken.text
    assert "503" in broken.text
