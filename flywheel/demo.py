"""`flywheel demo`: the closed loop, told as it happens, against a running platform.

On a synthetic credit-risk data set (`flywheel.demo_data`, the one the end-to-end test uses): v1 is
trained, registered and promoted to production; serving answers N predictions; the input distribution
shifts; the monitor detects the drift and asks for a retrain on newer data; the trainer trains v2, its
gate compares v2 with v1, v2 is promoted and serving answers from it. Each step is printed with the
seconds since the start; every wait is bounded; the last line says SUCCESS or FAILURE.

The story talks to the services only through their REST clients; `tell_story` takes them as arguments so
that a test can hand it fakes."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

import httpx
import pandas as pd

from flywheel.client import RegistryClient
from flywheel.demo_data import (
    FEATURES,
    TARGET,
    complete_rows,
    credit_risk_frame,
    shifted_credit_frame,
)
from flywheel.errors import FlywheelError, NotFoundError
from flywheel.monitor_client import MonitorClient
from flywheel.service_client import (
    DEFAULT_TIMEOUT_SECONDS,
    Json,
    ServiceAddress,
    ServiceClient,
    client_token,
    path_segment,
    readiness,
)
from flywheel.trainer_client import TrainerClient
from shared.settings import FlywheelSettings

SERVING = ServiceAddress("serving", "--serving-url", "FLYWHEEL_SERVING_URL", "http://127.0.0.1:8080")
TRAINING_ROWS = 6000  # over 1,000 reference values: the monitor's distance tests, stable on clean windows
WINDOW_ROWS = 500  # the monitor judges every 500 predictions
ROWS_PER_REQUEST = 50
SHIFTED_ROWS = 2 * WINDOW_ROWS
DEFAULT_PREDICTIONS = 2 * WINDOW_ROWS
DEFAULT_TIMEOUT = 120.0
POLL_SECONDS = 0.2
START_HINT = """\
Start one with `flywheel up` in another shell, then run `flywheel demo` again. With no servers configured
it runs embedded in one process; on the real servers of deploy/local:
  bash deploy/local/infra.sh up
  eval "$(bash deploy/local/infra.sh env)"
  flywheel up
A platform elsewhere: --registry-url, --trainer-url, --serving-url, --monitor-url (or
FLYWHEEL_REGISTRY_URL, FLYWHEEL_TRAINER_URL, FLYWHEEL_SERVING_URL, FLYWHEEL_MONITOR_URL)."""
EMBEDDED_START_TIMEOUT = 180.0  # a first start initialises the embedded PostgreSQL
LOCAL_HOSTS = ("127.0.0.1", "localhost")


class ServingClient(ServiceClient):
    """Serving's inference route over HTTP (the Open Inference Protocol's V1 `:predict`)."""

    address = SERVING

    def __init__(self, base_url: str | None = None, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> None:
        super().__init__(base_url, timeout)

    def predict(self, model: str, instances: list[dict[str, Any]]) -> tuple[list[Any], int]:
        """The predictions for `instances` (objects of named features) and the version that made them."""
        response = self._request(
            "POST", f"/v1/models/{path_segment(model)}:predict", json={"instances": instances}
        )
        predictions: list[Any] = response.json()["predictions"]
        return predictions, int(response.headers["X-Model-Version"])


class Registry(Protocol):
    def get_version_by_alias(self, name: str, alias: str) -> Json: ...


class Trainer(Protocol):
    def upload_dataset(self, path: str | Path) -> Json: ...
    def submit_job(self, request: dict[str, Any]) -> Json: ...
    def get_job(self, job_id: str) -> Json: ...
    def list_jobs(self, model: str | None = None, page_size: int = 100) -> Json: ...


class Monitor(Protocol):
    def set_policy(self, model: str, policy: dict[str, Any]) -> Json: ...
    def list_reports(self, model: str, version: int | None = None, page_size: int = 100) -> Json: ...
    def list_alerts(self, model: str | None = None, page_size: int = 100) -> Json: ...


class Serving(Protocol):
    def predict(self, model: str, instances: list[dict[str, Any]]) -> tuple[list[Any], int]: ...


@dataclass(frozen=True)
class Services:
    registry: Registry
    trainer: Trainer
    monitor: Monitor
    serving: Serving


@dataclass(frozen=True)
class DemoOptions:
    model: str
    predictions: int = DEFAULT_PREDICTIONS
    timeout: float = DEFAULT_TIMEOUT  # the bound of each wait


T = TypeVar("T")


class DemoFailure(Exception):
    """A step of the story did not happen (in time, or as it should)."""


@dataclass
class Timeline:
    """Prints each step as it happens, with the seconds since the start."""

    out: TextIO = field(default_factory=lambda: sys.stdout)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    started: float = 0.0

    def __post_init__(self) -> None:
        self.started = self.clock()

    def elapsed(self) -> float:
        return self.clock() - self.started

    def step(self, text: str) -> None:
        print(f"{self.elapsed():7.1f} s  {text}", file=self.out, flush=True)

    def note(self, text: str) -> None:
        print(f"           {text}", file=self.out, flush=True)

    def wait_for(self, check: Callable[[], T | None], what: str, timeout: float) -> T:
        """`check()`'s first answer other than None or False, polled until `timeout` seconds have passed."""
        deadline = self.clock() + timeout
        while True:
            found = check()
            if found is not None and found is not False:
                return found
            if self.clock() > deadline:
                raise DemoFailure(f"{what} did not happen within {timeout:.0f} s")
            self.sleep(POLL_SECONDS)


def default_model_name(now: float | None = None) -> str:
    """A fresh model name, so that runs do not collide: credit-risk-demo-20261123-155001."""
    return "credit-risk-demo-" + time.strftime("%Y%m%d-%H%M%S", time.localtime(now))


def format_metrics(metrics: dict[str, float], names: tuple[str, ...] = ("roc_auc", "accuracy", "f1")) -> str:
    shown = [name for name in names if name in metrics] or sorted(metrics)
    return ", ".join(f"{name} {metrics[name]:.3f}" for name in shown)


def format_drifted_features(alert: dict[str, Any]) -> str:
    """`income (ks 0.312 > 0.100), region (chi2 ...)`: the features that drifted, with the test's figures."""
    drifted = [feature for feature in alert.get("features", []) if feature.get("drifted")]
    return ", ".join(
        f"{feature['feature']} ({feature['method']} {feature['statistic']:.3f} > {feature['threshold']:.3f})"
        for feature in drifted
    )


def format_gate(gate: dict[str, Any], challenger_version: int) -> str:
    champion = gate.get("champion")
    metric = gate["metric"]
    if champion is None:
        against = "no champion to beat"
    else:
        against = f"v{gate['champion_version']} {metric} {champion:.3f}"
    decision = "promoted" if gate["promoted"] else "kept the champion"
    return (
        f"gate: v{challenger_version} {metric} {gate['challenger']:.3f} vs {against}, "
        f"on v{challenger_version}'s holdout (margin {gate['margin']:g}) -> {decision}"
    )


def instances(frame: pd.DataFrame) -> list[list[dict[str, Any]]]:
    """Request bodies' instances (objects of named features), ROWS_PER_REQUEST rows each."""
    records: list[dict[str, Any]] = frame[FEATURES].to_dict(orient="records")
    return [records[start : start + ROWS_PER_REQUEST] for start in range(0, len(records), ROWS_PER_REQUEST)]


def tell_story(services: Services, options: DemoOptions, timeline: Timeline) -> None:
    """The loop, step by step; raises DemoFailure (or a FlywheelError) when a step fails."""
    model = options.model
    with tempfile.TemporaryDirectory(prefix="flywheel-demo-") as directory:
        v1_path = Path(directory, "credit-risk-v1.csv")
        newer_path = Path(directory, "credit-risk-newer.csv")
        credit_risk_frame(TRAINING_ROWS, seed=0).to_csv(v1_path, index=False)
        shifted_credit_frame(TRAINING_ROWS, seed=10).to_csv(newer_path, index=False)
        v1_data = services.trainer.upload_dataset(v1_path)["uri"]
        newer_data = services.trainer.upload_dataset(newer_path)["uri"]
    timeline.step(
        f"data uploaded: {TRAINING_ROWS} synthetic loan applicants for v1, and {TRAINING_ROWS} newer ones "
        "kept for the retrain"
    )

    # v1: its promotion policy is the one the monitor's retrains inherit.
    v1_job = services.trainer.submit_job(
        {
            "dataset_uri": v1_data,
            "target": TARGET,
            "task": "classification",
            "estimator": "logistic_regression",
            "model_name": model,
            "feature_columns": FEATURES,
            "promotion": {"champion_alias": "production", "promote_to": "production", "min_improvement": 0},
        }
    )
    timeline.step(f"v1 training job {v1_job['id']} submitted (logistic regression, target `{TARGET}`)")
    v1 = finished_job(services.trainer, v1_job["id"], "v1's training job", options.timeout, timeline)
    timeline.step(f"v1 trained and registered as version 1: {format_metrics(v1['result']['metrics'])}")
    gate = v1["result"].get("gate") or {}
    if not gate.get("promoted"):
        raise DemoFailure(f"v1 was not promoted: {gate.get('reason', 'no gate decision')}")
    timeline.wait_for(
        lambda: production_version(services.registry, model) == 1, "production -> v1", options.timeout
    )
    timeline.step("v1 promoted to production (first version: no champion to beat)")

    services.monitor.set_policy(
        model,
        {
            "drift": {"window": {"max_rows": WINDOW_ROWS, "max_seconds": None}},
            "alerts": {"recovery_windows": 2},
            "retrain": {"on_drift": True, "cooldown_seconds": 0, "dataset_uri": newer_data},
        },
    )
    timeline.step(
        f"monitor watching: a window every {WINDOW_ROWS} predictions; on drift, retrain on the newer data"
    )

    clean = complete_rows(credit_risk_frame, options.predictions, seed=1)
    timeline.wait_for(
        lambda: answering_version(services.serving, model, clean) == 1,
        "serving answering from v1",
        options.timeout,
    )
    started = timeline.clock()
    versions = serve(services.serving, model, clean)
    seconds = max(timeline.clock() - started, 1e-9)
    if versions != {1}:
        raise DemoFailure(f"serving answered from versions {sorted(versions)}, not v1")
    timeline.step(
        f"{len(clean)} predictions served by v1 in {seconds:.2f} s "
        f"({len(clean) / seconds:,.0f} predictions/s, {ROWS_PER_REQUEST} per request)"
    )
    clean_windows = len(clean) // WINDOW_ROWS
    if clean_windows:
        reports = timeline.wait_for(
            lambda: judged(services.monitor, model, clean_windows),
            f"{clean_windows} windows judged",
            options.timeout,
        )
        if any(report["dataset_drift"] for report in reports):
            raise DemoFailure("the monitor saw drift in clean traffic")
        timeline.step(f"monitor: {clean_windows} window(s) of clean traffic judged, no drift")

    shifted = complete_rows(shifted_credit_frame, SHIFTED_ROWS, seed=11)
    timeline.step(
        "input distribution shifted: newer applicants, poorer, older, more indebted, mostly from the west"
    )
    shift_started = timeline.clock()
    serve(services.serving, model, shifted)
    timeline.step(f"{len(shifted)} shifted predictions served by v1")
    alert = timeline.wait_for(lambda: first_alert(services.monitor, model), "drift detected", options.timeout)
    payload = alert["alert"]
    timeline.step(
        f"drift detected {timeline.clock() - shift_started:.1f} s after the shift ({alert['severity']}, "
        f"window of {payload['window_rows']} predictions by v{payload['version']})"
    )
    timeline.note(f"drifted: {format_drifted_features(payload)}")

    retrain_job = timeline.wait_for(
        lambda: other_job(services.trainer, model, v1_job["id"]), "a retrain requested", options.timeout
    )
    timeline.step(f"retrain requested by the monitor: training job {retrain_job['id']} on the newer data")
    v2 = finished_job(services.trainer, retrain_job["id"], "v2's training job", options.timeout, timeline)
    timeline.step(f"v2 trained on the newer data and registered: {format_metrics(v2['result']['metrics'])}")
    gate = v2["result"].get("gate") or {}
    if not gate:
        raise DemoFailure("v2's job made no gate decision")
    timeline.step(format_gate(gate, 2))
    if not gate["promoted"]:
        raise DemoFailure(f"the gate kept v1: {gate['reason']}")
    timeline.wait_for(
        lambda: production_version(services.registry, model) == 2, "production -> v2", options.timeout
    )
    timeline.step("v2 promoted to production")
    probe = shifted.head(ROWS_PER_REQUEST)
    timeline.wait_for(
        lambda: answering_version(services.serving, model, probe) == 2,
        "serving answering from v2",
        options.timeout,
    )
    timeline.step("serving answers from v2 (hot swap, no restart)")


def finished_job(trainer: Trainer, job_id: str, what: str, timeout: float, timeline: Timeline) -> Json:
    def ended() -> Json | None:
        job = trainer.get_job(job_id)
        return job if job["status"] in ("succeeded", "failed") else None

    job = timeline.wait_for(ended, what, timeout)
    if job["status"] != "succeeded":
        raise DemoFailure(f"{what} failed: {job.get('error') or job.get('errors') or job}")
    return job


def production_version(registry: Registry, model: str) -> int | None:
    try:
        return int(registry.get_version_by_alias(model, "production")["version"])
    except NotFoundError:
        return None


def answering_version(serving: Serving, model: str, frame: pd.DataFrame) -> int | None:
    try:
        return serving.predict(model, instances(frame.head(ROWS_PER_REQUEST))[0])[1]
    except NotFoundError:  # serving has not loaded the model yet
        return None


def serve(serving: Serving, model: str, frame: pd.DataFrame) -> set[int]:
    """Send the frame to serving, ROWS_PER_REQUEST rows a request; the versions that answered."""
    versions = set()
    for body in instances(frame):
        predictions, version = serving.predict(model, body)
        if len(predictions) != len(body):
            raise DemoFailure(f"serving answered {len(predictions)} predictions for {len(body)} rows")
        versions.add(version)
    return versions


def judged(monitor: Monitor, model: str, count: int) -> list[Json] | None:
    reports: list[Json] = monitor.list_reports(model)["reports"]
    return reports if len(reports) >= count else None


def first_alert(monitor: Monitor, model: str) -> Json | None:
    alerts: list[Json] = monitor.list_alerts(model)["alerts"]
    return alerts[-1] if alerts else None


def other_job(trainer: Trainer, model: str, known: str) -> Json | None:
    jobs: list[Json] = trainer.list_jobs(model)["jobs"]
    return next((job for job in jobs if job["id"] != known), None)


@dataclass(frozen=True)
class DemoUrls:
    registry: str
    trainer: str
    serving: str
    monitor: str

    def named(self) -> list[tuple[str, str]]:
        return [
            ("registry", self.registry),
            ("trainer", self.trainer),
            ("serving", self.serving),
            ("monitor", self.monitor),
        ]


def not_ready(urls: DemoUrls) -> list[tuple[str, str, str]]:
    """(service, URL, why) of each service that does not answer ready."""
    found = []
    for name, url in urls.named():
        ready, shown = readiness(url)
        if not ready:
            found.append((name, url, shown))
    return found


def run_demo(
    urls: DemoUrls, options: DemoOptions, out: TextIO | None = None, *, may_start_embedded: bool = False
) -> int:
    """Tell the story against the platform at `urls`: 0 when the loop closed, 1 otherwise. When no service
    answers and `may_start_embedded`, the embedded platform is started for the story (`flywheel up` as a
    child process, on the ports of `urls`) and stopped after it."""
    stream = out or sys.stdout
    missing = not_ready(urls)
    if may_start_embedded and len(missing) == len(urls.named()) and embedded_ports(urls) is not None:
        try:
            with started_embedded_platform(urls, stream):
                status, closing_line = tell_story_against(urls, options, stream, platform_stays_up=False)
        except FlywheelUpNotReady as error:
            status, closing_line = 1, f"FAILURE: the embedded platform did not start: {error}"
        print(closing_line, file=stream)
        return status
    if missing:
        print("flywheel demo: no running Flywheel platform answers:", file=stream)
        for name, url, why in missing:
            print(f"  {name:<9} {url:<24} {why}", file=stream)
        print(START_HINT, file=stream)
        print("FAILURE: no platform to run the demo against", file=stream)
        return 1
    status, closing_line = tell_story_against(urls, options, stream, platform_stays_up=True)
    print(closing_line, file=stream)
    return status


def tell_story_against(
    urls: DemoUrls, options: DemoOptions, stream: TextIO, *, platform_stays_up: bool
) -> tuple[int, str]:
    """The story told on `stream`; returns the exit status and the closing SUCCESS or FAILURE line, which
    the caller prints last."""
    timeline = Timeline(stream)
    print(
        f"flywheel demo: model {options.model}, on the platform at {urls.registry} (registry), "
        f"{urls.serving} (serving)",
        file=stream,
    )
    with (
        RegistryClient(urls.registry) as registry,
        TrainerClient(urls.trainer) as trainer,
        MonitorClient(urls.monitor) as monitor,
        ServingClient(urls.serving) as serving,
    ):
        try:
            tell_story(Services(registry, trainer, monitor, serving), options, timeline)
        except (DemoFailure, FlywheelError) as error:
            return 1, f"FAILURE after {timeline.elapsed():.1f} s: {error}"
    dashboard = f"{urls.monitor}/dashboard/{path_segment(options.model)}"
    notes = [] if platform_stays_up else ["once `flywheel up` serves the same data again"]
    if client_token():
        notes.append("a browser signs in with a token first")
    print(f"dashboard: {dashboard}" + (f" ({'; '.join(notes)})" if notes else ""), file=stream)
    return 0, (
        f"SUCCESS: the loop closed in {timeline.elapsed():.1f} s: drift in production retrained, gated, "
        "promoted and served v2 with no one in the middle"
    )


class FlywheelUpNotReady(Exception):
    """`flywheel up` (embedded) did not get ready; the message says why, with its log's last lines."""


def embedded_ports(urls: DemoUrls) -> dict[str, int] | None:
    """Each service's port when every URL is plain HTTP on this machine, else None (nothing to start)."""
    ports = {}
    for name, url in urls.named():
        parsed = httpx.URL(url)
        if parsed.scheme != "http" or parsed.host not in LOCAL_HOSTS or parsed.port is None:
            return None
        ports[name] = parsed.port
    return ports


@contextlib.contextmanager
def started_embedded_platform(urls: DemoUrls, stream: TextIO) -> Iterator[None]:
    """`flywheel up` in a child process, serving where `urls` point, until the block ends. Its log goes to a
    file in the data directory (the demo's own output stays readable) and is shown if it fails."""
    ports = embedded_ports(urls)
    assert ports is not None
    data_dir = FlywheelSettings().data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    log_path = data_dir / "flywheel-up.log"
    environment = {
        **os.environ,
        **{f"FLYWHEEL_{name.upper()}_PORT": str(port) for name, port in ports.items()},
    }
    print(
        f"flywheel demo: no platform answers; starting the embedded one (flywheel up, log in {log_path})",
        file=stream,
        flush=True,
    )
    started = time.monotonic()
    with log_path.open("ab") as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "flywheel", "up"], env=environment, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        while not_ready(urls):
            if child.poll() is not None:
                raise FlywheelUpNotReady(f"flywheel up exited with {child.returncode}:\n{_tail(log_path)}")
            if time.monotonic() - started > EMBEDDED_START_TIMEOUT:
                raise FlywheelUpNotReady(
                    f"not ready after {EMBEDDED_START_TIMEOUT:.0f} s:\n{_tail(log_path)}"
                )
            time.sleep(POLL_SECONDS)
        print(
            f"flywheel demo: the embedded platform is up after {time.monotonic() - started:.1f} s, "
            f"data in {data_dir}",
            file=stream,
            flush=True,
        )
        yield
    finally:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=60)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        print(
            f"flywheel demo: stopped the embedded platform it started; its data stays in {data_dir}",
            file=stream,
            flush=True,
        )


def _tail(path: Path, lines: int = 20) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
