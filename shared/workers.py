"""What the worker processes of one service share: their numbers (slots), and how many connections each
holds (so that they can keep the connections spread evenly, see `shared.http_protocol`).

`shared.service.run_service` makes a directory for each multi-worker service and names it to the workers
in `FLYWHEEL_WORKER_SLOTS_DIR`; a service in one process has none, and gets slot 0 and no counts.
"""

from __future__ import annotations

import fcntl
import itertools
import mmap
import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

WORKER_SLOTS_VARIABLE = "FLYWHEEL_WORKER_SLOTS_DIR"
CONNECTION_COUNTS_FILE = "connections"
# A connection handed over comes back (to whichever worker accepts it) only with its client's next request:
# until then neither worker counts it, and handing more over in the meantime would overshoot.
HAND_OVER_INTERVAL_SECONDS = 0.1


def remove_orphaned_worker_directories(parent: Path | None = None) -> list[Path]:
    """Remove the workers' directories (`flywheel-<service>-<metrics|slots>-<pid>-*`) that `run_service`
    made in processes no longer alive (killed, so it could not remove them itself); return them."""
    removed = []
    for directory in (parent or Path(tempfile.gettempdir())).glob("flywheel-*-*-*-*"):
        match = _WORKER_DIRECTORY.fullmatch(directory.name)
        if match is None or process_alive(int(match["pid"])):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        removed.append(directory)
    return removed


_WORKER_DIRECTORY = re.compile(r"flywheel-[a-z]+-(?:metrics|slots)-(?P<pid>[0-9]+)-.+")


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


@dataclass
class WorkerSlot:
    """A worker process's number among its service's workers, held (a file lock) while it lives."""

    number: int
    lock: IO[bytes] | None = None

    def release(self) -> None:
        if self.lock is not None:
            self.lock.close()  # closing the file drops its lock
            self.lock = None


def claim_worker_slot(purpose: str = "worker") -> WorkerSlot:
    """The lowest number no live worker of this service holds for `purpose`: 0 for a service in a process
    of its own. The kernel drops a dead worker's lock, so uvicorn's replacement for it takes its number, and
    whatever a worker keys by its number (the batch stream's Kafka transactional id) passes to the
    replacement. Each purpose numbers the workers on its own, so that claiming for one never moves another."""
    directory = os.environ.get(WORKER_SLOTS_VARIABLE)
    if directory is None:
        return WorkerSlot(0)
    for number in itertools.count():
        lock = (Path(directory) / f"{purpose}-{number}.lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()  # a live worker holds it
            continue
        return WorkerSlot(number, lock)
    raise AssertionError("unreachable")


class ConnectionCounts:
    """How many open connections each worker of a service means to keep, in a small file every worker maps:
    for each slot, the pid of the worker holding it and its count. Each worker writes only its own slot;
    reading the others' is a few loads from shared memory (no system call), cheap enough for every request.
    """

    def __init__(
        self,
        path: Path,
        slot: int,
        held: WorkerSlot | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.held = held  # the claim on `slot`, kept while the worker lives
        self.clock = clock
        self._last_hand_over = -HAND_OVER_INTERVAL_SECONDS
        with path.open("r+b") as file:
            self._map = mmap.mmap(file.fileno(), 0)
        self._ints = memoryview(self._map).cast("i")  # pid 0, count 0, pid 1, count 1, ...
        self.slots = len(self._ints) // 2
        if not 0 <= slot < self.slots:
            raise ValueError(f"slot {slot} is not one of the file's {self.slots}")
        self.slot = slot
        self._ints[2 * slot] = os.getpid()
        self._ints[2 * slot + 1] = 0  # a replacement does not inherit its predecessor's connections

    @staticmethod
    def create(path: Path, workers: int) -> None:
        """The file for `workers` slots, all free."""
        path.write_bytes(bytes(8 * workers))

    @classmethod
    def for_this_worker(cls) -> ConnectionCounts | None:
        """This worker's counts, in a service whose workers share a counts file (None otherwise)."""
        directory = os.environ.get(WORKER_SLOTS_VARIABLE)
        if directory is None or not (path := Path(directory) / CONNECTION_COUNTS_FILE).exists():
            return None
        slot = claim_worker_slot("connections")
        try:
            return cls(path, slot.number, slot)
        except ValueError:  # more workers than slots: this one does without
            slot.release()
            return None

    @property
    def mine(self) -> int:
        return self._ints[2 * self.slot + 1]

    def add(self, connections: int) -> None:
        self._ints[2 * self.slot + 1] += connections

    def more_than_my_share(self) -> bool:
        """Whether this worker holds two or more connections more than the least loaded live worker: handing
        one over would then even them out (a difference of one cannot be evened)."""
        ints, mine = self._ints, self._ints[2 * self.slot + 1]
        if mine < 2:
            return False
        others = [slot for slot in range(self.slots) if slot != self.slot and ints[2 * slot]]
        if not others or mine - min(ints[2 * slot + 1] for slot in others) < 2:
            return False
        # Rare (only while uneven): make sure the least loaded is alive, not a dead worker's stale slot.
        alive = [ints[2 * slot + 1] for slot in others if process_alive(ints[2 * slot])]
        return bool(alive) and mine - min(alive) >= 2

    def hand_over_one(self) -> bool:
        """Whether to hand a connection over now: this worker holds more than its share, and it handed none
        over in the last `HAND_OVER_INTERVAL_SECONDS` (that one may still be on its way back). When so, the
        caller hands one over and takes it off this worker's count."""
        if not self.more_than_my_share():
            return False
        now = self.clock()
        if now - self._last_hand_over < HAND_OVER_INTERVAL_SECONDS:
            return False
        self._last_hand_over = now
        return True
