"""The two tracking servers behind one small interface, spoken to over REST with one sequential
keep-alive connection each (one request at a time), every request's latency recorded by operation.

The client is the standard library's http.client with orjson, not httpx: httpx spent about 3 ms of
CPU per logged run (1 ms a request, most of it its own machinery), the same for both servers, which
made the client, not the server, the largest part of a fast server's time and hid the ratio the
benchmark is after. A lean client costs each server's turn about the same small amount.
"""

from __future__ import annotations

import http.client
import time
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, Protocol
from urllib.parse import urlsplit

import orjson

from bench.registry.workload import SEARCH_FILTER, SEARCH_MAX_RESULTS, SEARCH_ORDER_BY, RunData

REQUEST_TIMEOUT_SECONDS = 60.0
IDLE_RECONNECT_SECONDS = 1.0


class UnexpectedResponse(RuntimeError):
    """A server answered with a status the benchmark did not expect."""


class TrackingClient(Protocol):
    name: str
    latencies: dict[str, list[float]]

    def create_experiment(self, name: str) -> str: ...
    def create_run(self, experiment_id: str, start_ms: int) -> str: ...
    def log_batch(self, run_id: str, run: RunData, timestamp_ms: int) -> None: ...
    def finish_run(self, run_id: str, end_ms: int) -> None: ...
    def search_aucs(self, experiment_id: str) -> list[float]: ...
    def close(self) -> None: ...


class _TimedClient:
    """One keep-alive HTTP connection that times each call (encoding, round trip and reading the
    answer) under an operation name."""

    def __init__(self, name: str, base_url: str) -> None:
        self.name = name
        self.latencies: dict[str, list[float]] = defaultdict(list)
        address = urlsplit(base_url)
        if address.scheme != "http" or address.hostname is None:
            raise ValueError(f"{name}: expected an http://host:port base URL, got {base_url!r}")
        self._http = http.client.HTTPConnection(
            address.hostname, address.port or 80, timeout=REQUEST_TIMEOUT_SECONDS
        )
        self._last_answer = 0.0

    def _call(self, operation: str, method: str, path: str, body: dict[str, Any], expected: int) -> Any:
        started = time.perf_counter()
        if started - self._last_answer > IDLE_RECONNECT_SECONDS:
            # The server may have closed the idle connection (uvicorn after 5 s) while the other one had
            # its turn; http.client would only find out on writing to it.
            self._http.close()
        self._http.request(method, path, orjson.dumps(body), _JSON_HEADERS)
        response = self._http.getresponse()
        content = response.read()
        self._last_answer = time.perf_counter()
        self.latencies[operation].append(self._last_answer - started)
        if response.status != expected:
            raise UnexpectedResponse(
                f"{self.name} {method} {path}: expected {expected}, got {response.status}: "
                f"{content[:500].decode(errors='replace')}"
            )
        return orjson.loads(content) if content else None

    def close(self) -> None:
        self._http.close()


_JSON_HEADERS = {"Content-Type": "application/json"}


class MlflowClient(_TimedClient):
    """MLflow's REST API 2.0 (times in epoch milliseconds)."""

    def __init__(self, base_url: str) -> None:
        super().__init__("MLflow", base_url)

    def create_experiment(self, name: str) -> str:
        body = self._call(
            "create experiment", "POST", "/api/2.0/mlflow/experiments/create", {"name": name}, 200
        )
        return str(body["experiment_id"])

    def create_run(self, experiment_id: str, start_ms: int) -> str:
        body = self._call(
            "create run",
            "POST",
            "/api/2.0/mlflow/runs/create",
            {"experiment_id": experiment_id, "start_time": start_ms},
            200,
        )
        return str(body["run"]["info"]["run_id"])

    def log_batch(self, run_id: str, run: RunData, timestamp_ms: int) -> None:
        params = [{"key": key, "value": value} for key, value in run.params.items()]
        metrics = [
            {"key": p.key, "value": p.value, "timestamp": timestamp_ms + p.step, "step": p.step}
            for p in run.metrics
        ]
        self._call(
            "log batch",
            "POST",
            "/api/2.0/mlflow/runs/log-batch",
            {"run_id": run_id, "params": params, "metrics": metrics},
            200,
        )

    def finish_run(self, run_id: str, end_ms: int) -> None:
        self._call(
            "finish run",
            "POST",
            "/api/2.0/mlflow/runs/update",
            {"run_id": run_id, "status": "FINISHED", "end_time": end_ms},
            200,
        )

    def search_aucs(self, experiment_id: str) -> list[float]:
        body = self._call(
            "search",
            "POST",
            "/api/2.0/mlflow/runs/search",
            {
                "experiment_ids": [experiment_id],
                "filter": SEARCH_FILTER,
                "order_by": list(SEARCH_ORDER_BY),
                "max_results": SEARCH_MAX_RESULTS,
            },
            200,
        )
        runs = body.get("runs", [])
        return [next(m["value"] for m in run["data"]["metrics"] if m["key"] == "auc") for run in runs]


class FlywheelClient(_TimedClient):
    """Flywheel's registry tracking routes (times in ISO-8601)."""

    def __init__(self, base_url: str) -> None:
        super().__init__("Flywheel", base_url)

    def create_experiment(self, name: str) -> str:
        return str(self._call("create experiment", "POST", "/experiments", {"name": name}, 201)["id"])

    def create_run(self, experiment_id: str, start_ms: int) -> str:
        body = self._call(
            "create run",
            "POST",
            "/runs",
            {"experiment_id": experiment_id, "start_time": _iso(start_ms)},
            201,
        )
        return str(body["id"])

    def log_batch(self, run_id: str, run: RunData, timestamp_ms: int) -> None:
        params = [{"key": key, "value": value} for key, value in run.params.items()]
        times = {step: _iso(timestamp_ms + step) for step in {p.step for p in run.metrics}}
        metrics = [
            {"key": p.key, "value": p.value, "timestamp": times[p.step], "step": p.step} for p in run.metrics
        ]
        self._call(
            "log batch", "POST", f"/runs/{run_id}/log-batch", {"params": params, "metrics": metrics}, 204
        )

    def finish_run(self, run_id: str, end_ms: int) -> None:
        self._call(
            "finish run", "PATCH", f"/runs/{run_id}", {"status": "finished", "end_time": _iso(end_ms)}, 200
        )

    def search_aucs(self, experiment_id: str) -> list[float]:
        body = self._call(
            "search",
            "POST",
            "/runs/search",
            {
                "experiment_ids": [experiment_id],
                "filter": SEARCH_FILTER,
                "order_by": list(SEARCH_ORDER_BY),
                "max_results": SEARCH_MAX_RESULTS,
            },
            200,
        )
        return [float(run["metrics"]["auc"]) for run in body["runs"]]


def _iso(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).isoformat()
