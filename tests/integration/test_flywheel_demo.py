"""`flywheel demo` on the real servers: the five services as processes, the demo run in-process against
their URLs, its timeline checked; and with nothing running, a clear failure naming what it tried."""

from __future__ import annotations

import asyncio
import time

import pytest

from flywheel.cli import main
from tests.integration.conftest import PlatformFactory
from tests.processes import free_port

TIMELINE = [
    "v1 trained and registered as version 1: roc_auc ",
    "v1 promoted to production",
    "1000 predictions served by v1 in ",
    "monitor: 2 window(s) of clean traffic judged, no drift",
    "input distribution shifted",
    "drift detected ",
    "drifted: ",
    "retrain requested by the monitor: training job ",
    "v2 trained on the newer data and registered: roc_auc ",
    "gate: v2 roc_auc ",
    " vs v1 roc_auc ",
    "-> promoted",
    "v2 promoted to production",
    "serving answers from v2",
    "dashboard: http://127.0.0.1:",
    "SUCCESS: the loop closed in ",
]


async def test_demo_tells_the_whole_loop_and_succeeds(
    platform_factory: PlatformFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    platform = await platform_factory(environment={"FLYWHEEL_MONITOR_WINDOW_CHECK_SECONDS": "0.5"})
    arguments = [
        "demo",
        *("--registry-url", platform.registry.url),
        *("--trainer-url", platform.trainer.url),
        *("--serving-url", platform.servings[0].url),
        *("--monitor-url", platform.monitor.url),
        *("--predictions", "1000", "--timeout", "90"),
    ]
    started = time.monotonic()
    status = await asyncio.to_thread(main, arguments)
    output = capsys.readouterr().out
    print(output)
    print(f"flywheel demo took {time.monotonic() - started:.1f} s")
    assert status == 0, output + platform.log_tails()
    positions = [output.find(line) for line in TIMELINE]
    assert all(position >= 0 for position in positions), [
        line for line, position in zip(TIMELINE, positions, strict=True) if position < 0
    ]
    assert positions == sorted(positions), "the timeline's steps out of order"
    assert f"dashboard: {platform.monitor.url}/dashboard/credit-risk-demo-" in output
    assert output.rstrip().splitlines()[-1].startswith("SUCCESS")


def test_demo_without_a_platform_fails_naming_the_urls(capsys: pytest.CaptureFixture[str]) -> None:
    urls = {name: f"http://127.0.0.1:{free_port()}" for name in ["registry", "trainer", "serving", "monitor"]}
    status = main(["demo", *(item for name, url in urls.items() for item in (f"--{name}-url", url))])
    output = capsys.readouterr().out
    assert status == 1
    for name, url in urls.items():
        assert f"{name:<9} {url:<24} not answering" in output
    assert "bash deploy/local/infra.sh up" in output
    assert 'eval "$(bash deploy/local/infra.sh env)"' in output
    assert "flywheel up" in output
    assert output.rstrip().splitlines()[-1].startswith("FAILURE")
