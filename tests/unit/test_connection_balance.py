"""Keep-alive connections spread evenly over a service's workers: each worker counts its connections in a
shared file, and one holding two or more than the least loaded live worker closes a connection after its
next answer (`Connection: close`), so that the client reconnects, most likely to the idle worker."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from shared.workers import HAND_OVER_INTERVAL_SECONDS, WORKER_SLOTS_VARIABLE, ConnectionCounts
from tests.pid_app import LATE_START_SECONDS
from tests.processes import REPO_ROOT, free_port


def counts_file(tmp_path: Path, workers: int) -> Path:
    path = tmp_path / "connections"
    ConnectionCounts.create(path, workers)
    return path


def test_a_worker_with_two_more_connections_than_another_hands_one_over(tmp_path: Path) -> None:
    path = counts_file(tmp_path, 2)
    busy, idle = ConnectionCounts(path, 0), ConnectionCounts(path, 1)
    busy.add(16)
    assert busy.more_than_my_share()
    assert not idle.more_than_my_share()
    for held, other, hands_over in [(9, 7, True), (8, 7, False), (8, 8, False), (1, 0, False), (2, 0, True)]:
        busy.add(held - busy.mine)
        idle.add(other - idle.mine)
        assert busy.more_than_my_share() is hands_over, (held, other)


def test_one_connection_is_handed_over_per_interval(tmp_path: Path) -> None:
    """Until a handed-over connection comes back with its client's next request nobody counts it: handing
    more over meanwhile would overshoot (a worker holding 16 of 16 could hand 15 over in one round of a
    test's sequential requests, before any came back)."""
    now = [100.0]
    path = counts_file(tmp_path, 2)
    busy, idle = ConnectionCounts(path, 0, clock=lambda: now[0]), ConnectionCounts(path, 1)
    busy.add(16)
    assert busy.hand_over_one()
    busy.add(-1)
    assert busy.more_than_my_share()
    assert not busy.hand_over_one()
    now[0] += HAND_OVER_INTERVAL_SECONDS + 0.001
    assert busy.hand_over_one()
    assert not idle.hand_over_one()


def test_a_worker_alone_keeps_its_connections(tmp_path: Path) -> None:
    """The other slots have not been claimed yet (their workers are starting): nobody to hand over to."""
    alone = ConnectionCounts(counts_file(tmp_path, 3), 0)
    alone.add(20)
    assert not alone.more_than_my_share()


def test_a_dead_workers_slot_is_no_reason_to_hand_over(tmp_path: Path) -> None:
    """A worker that died holding no connection left its slot at 0: the live ones must not keep closing
    connections for it until its replacement comes."""
    path = counts_file(tmp_path, 3)
    subprocess.run(
        [
            sys.executable,
            "-c",
            f"from pathlib import Path; from shared.workers import ConnectionCounts; "
            f"ConnectionCounts(Path({str(path)!r}), 2)",
        ],
        cwd=REPO_ROOT,
        check=True,
    )
    live, other = ConnectionCounts(path, 0), ConnectionCounts(path, 1)
    live.add(8)
    other.add(7)
    assert not live.more_than_my_share()


def test_a_replacement_starts_from_no_connections(tmp_path: Path) -> None:
    path = counts_file(tmp_path, 2)
    ConnectionCounts(path, 1).add(5)
    assert ConnectionCounts(path, 1).mine == 0


def test_a_slot_beyond_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="slot 2 is not one of the file's 2"):
        ConnectionCounts(counts_file(tmp_path, 2), 2)


def test_a_service_in_one_process_counts_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(WORKER_SLOTS_VARIABLE, raising=False)
    assert ConnectionCounts.for_this_worker() is None
    monkeypatch.setenv(WORKER_SLOTS_VARIABLE, str(tmp_path))  # a slots directory, but no counts file
    assert ConnectionCounts.for_this_worker() is None


@pytest.mark.parametrize(("method", "path"), [("GET", "/"), ("POST", "/pid")], ids=["app", "fast-lane"])
def test_connections_that_all_landed_on_one_worker_spread_over_both(method: str, path: str) -> None:
    """Two real uvicorn workers through `run_service`. Sixteen keep-alive connections are opened while only
    worker 0 accepts; once worker 1 does, worker 0 hands connections over until each holds eight. The client
    (http.client) reconnects when told `Connection: close`, and no request fails. The same whether the app
    answers the requests or the protocol's fast lane does."""
    port = free_port()
    service = subprocess.Popen(
        [sys.executable, "-m", "tests.pid_app", str(port)], cwd=REPO_ROOT, start_new_session=True
    )
    try:
        wait_until_answering(port)
        connections = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(16)]

        def round_of_requests() -> list[int]:
            pids = []
            for connection in connections:
                connection.request(method, path, body=b"")
                response = connection.getresponse()
                assert response.status == 200
                assert (response.getheader("x-answered-by") == "lane") == (path == "/pid")
                pids.append(int(response.read()))
            return pids

        first = round_of_requests()
        assert len(set(first)) == 1, "worker 1 accepted before its late start"

        # Even once three rounds in a row have answered 8 and 8 (a connection handed over in a round still
        # answers that round, and lands with its next request).
        deadline = time.monotonic() + LATE_START_SECONDS + 30
        splits: list[list[int]] = []
        while time.monotonic() < deadline and splits[-3:] != [[8, 8]] * 3:
            splits.append(sorted(Counter(round_of_requests()).values()))
            time.sleep(0.01)
        assert splits[-3:] == [[8, 8]] * 3, f"connections per worker, by round: {splits[-10:]}"
        for connection in connections:
            connection.close()
    finally:
        service.terminate()
        service.wait(timeout=30)


def wait_until_answering(port: int, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while True:
        probe = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            probe.request("GET", "/")
            probe.getresponse().read()
            return
        except ConnectionRefusedError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
        finally:
            probe.close()
