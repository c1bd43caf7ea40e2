"""Worker slots: each worker process of a service holds a distinct number, the lowest free one, and a dead
worker's number passes to the next worker that claims one (the batch stream keys its Kafka transactional
id by it, so a replacement fences its dead predecessor's open transaction)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from services.batch.settings import BatchSettings
from shared.workers import WORKER_SLOTS_VARIABLE, claim_worker_slot, remove_orphaned_worker_directories

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_a_service_in_a_process_of_its_own_is_worker_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(WORKER_SLOTS_VARIABLE, raising=False)
    assert claim_worker_slot().number == 0
    assert claim_worker_slot().number == 0


def test_workers_hold_distinct_numbers_and_a_released_one_is_taken_again(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(WORKER_SLOTS_VARIABLE, str(tmp_path))
    first, second, third = claim_worker_slot(), claim_worker_slot(), claim_worker_slot()
    assert (first.number, second.number, third.number) == (0, 1, 2)
    second.release()
    assert claim_worker_slot().number == 1
    first.release()
    third.release()


def test_a_dead_workers_number_goes_to_the_next_worker(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(WORKER_SLOTS_VARIABLE, str(tmp_path))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import time; from shared.workers import claim_worker_slot; "
            "slot = claim_worker_slot(); print(slot.number, flush=True); time.sleep(60)",
        ],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "0"
        mine = claim_worker_slot()
        assert mine.number == 1
        holder.kill()  # no clean-up runs: the kernel drops its lock
        holder.wait(timeout=10)
        assert claim_worker_slot().number == 0
        mine.release()
    finally:
        holder.kill()
        holder.wait(timeout=10)


def test_the_stream_transactional_id_is_the_replicas_with_the_worker_number_after_the_first() -> None:
    settings = BatchSettings(consumer_group="scoring", replica_id="pod-7", workers=2)
    assert settings.transactional_id() == "scoring-pod-7"
    assert settings.transactional_id(0) == "scoring-pod-7"
    assert settings.transactional_id(1) == "scoring-pod-7-1"


def test_the_worker_directories_of_a_killed_service_are_removed_by_the_next_one(tmp_path: Path) -> None:
    """run_service removes its workers' directories as it ends; one killed cannot, so the next removes
    those whose process is gone, and only those."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    dead_pid = int(gone.stdout)
    names = [
        f"flywheel-batch-metrics-{dead_pid}-a1b2",
        f"flywheel-serving-slots-{dead_pid}-c3d4",
        f"flywheel-batch-slots-{os.getpid()}-e5f6",  # this process's: alive
        "flywheel-batch-x1y2",  # not a workers' directory
        "flywheel-bench.lock",
    ]
    for name in names:
        (tmp_path / name).mkdir()
    removed = remove_orphaned_worker_directories(tmp_path)
    assert sorted(path.name for path in removed) == sorted(names[:2])
    assert sorted(path.name for path in tmp_path.iterdir()) == sorted(names[2:])


def test_each_purpose_numbers_the_workers_on_its_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A worker claiming a slot for its connection counts keeps the number the batch stream keys by."""
    monkeypatch.setenv(WORKER_SLOTS_VARIABLE, str(tmp_path))
    stream, connections = claim_worker_slot(), claim_worker_slot("connections")
    assert (stream.number, connections.number) == (0, 0)
    assert claim_worker_slot().number == 1
