"""What one prediction-logged event costs the monitor, part by part, in one process (no Kafka, no database):
the per-event path of `DriftMonitor.observe` on the events bench/drift/producer.py sends, under CPython's
default garbage collector, with it off, or tuned as serving and batch run it.

    python -m bench.drift.event_cost [--gc default|off|tuned] [--events 1000] [--pending 200000]

Per event (2,000 predictions): the envelope (`CloudEvent.model_validate_json`), the payload
(`payload_as(PredictionLogged)`), `TrafficCounter.add`, `PendingPredictions.add` (200,000 entries, as the
service keeps), `TumblingWindows.add_event` and `evaluate` of each window it closes (10,000 rows). CPU time
(`time.process_time`) per 100 events as it goes, so that a cost that grows shows, then the parts over the
last `--measure` events. Pin it to a core of its own (`taskset -c 1`) for steadier figures.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import orjson  # noqa: E402

from bench.drift.producer import Events  # noqa: E402
from services.monitor.drift import DriftConfig, evaluate  # noqa: E402
from services.monitor.performance import PendingPredictions  # noqa: E402
from services.monitor.reference import Reference  # noqa: E402
from services.monitor.traffic import TrafficCounter  # noqa: E402
from services.monitor.windows import TumblingWindows  # noqa: E402
from shared.events import CloudEvent, PredictionLogged  # noqa: E402
from shared.service import garbage_collector_for_throughput  # noqa: E402
from tests.monitor_data import profile_of, traffic  # noqa: E402

PARTS = ("envelope", "payload", "traffic", "pending", "windows", "judge")
PENDING_CAPACITY = 200_000  # DriftMonitor's default


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--gc", choices=["default", "off", "tuned"], default="default")
    parser.add_argument(
        "--events", type=int, default=1000, help="events of 2,000 predictions (default 1,000)"
    )
    parser.add_argument("--measure", type=int, default=300, help="the last events, timed part by part")
    parser.add_argument("--request-rows", type=int, default=1, help="rows per logged request (default 1)")
    parser.add_argument(
        "--pending",
        type=int,
        default=PENDING_CAPACITY,
        help=f"predictions kept for ground truth (default {PENDING_CAPACITY:,}, the service's; 0: none kept)",
    )
    arguments = parser.parse_args(argv)

    config = DriftConfig()
    profile = orjson.dumps(profile_of(traffic(5000, seed=1)), option=orjson.OPT_SERIALIZE_NUMPY)
    reference = Reference.from_profile(orjson.loads(profile))
    windows = TumblingWindows("credit", 1, reference, config.window)
    counter, pending = TrafficCounter(), PendingPredictions(arguments.pending)
    events = Events(2000, arguments.request_rows)
    spent = dict.fromkeys(PARTS, 0.0)
    recent = 0.0
    with garbage_collector_for_throughput() if arguments.gc == "tuned" else contextlib.nullcontext():
        if arguments.gc == "off":
            gc.disable()
        print(
            f"garbage collector: {arguments.gc}, thresholds {gc.get_threshold()}, enabled {gc.isenabled()}; "
            f"{arguments.pending:,} pending predictions kept"
        )
        for index in range(1, arguments.events + 1):
            raw = events.next()
            t0 = time.process_time()
            event = CloudEvent.model_validate_json(raw)
            t1 = time.process_time()
            payload = event.payload_as(PredictionLogged)
            t2 = time.process_time()
            counter.add(payload)
            t3 = time.process_time()
            if arguments.pending:
                pending.add(payload, "label")
            t4 = time.process_time()
            closed = windows.add_event(payload)
            t5 = time.process_time()
            for window in closed:
                evaluate(window, config)
            t6 = time.process_time()
            recent += t6 - t0
            if index > arguments.events - arguments.measure:
                for part, start, stop in zip(
                    PARTS, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6), strict=True
                ):
                    spent[part] += stop - start
            if index % 100 == 0:
                collections = [generation["collections"] for generation in gc.get_stats()]
                print(
                    f"{index * 2000:>10,} predictions: {recent / 100 * 1e3:6.2f} ms an event "
                    f"({2000 * 100 / recent:,.0f} predictions per CPU-second); collections by generation "
                    f"{collections}; RSS {rss_mb():.0f} MB",
                    flush=True,
                )
                recent = 0.0
        gc.enable()
    measured = min(arguments.measure, arguments.events)
    total = sum(spent.values())
    print(
        f"the last {measured} events: {total / measured * 1e3:.1f} ms an event "
        f"({2000 * measured / total:,.0f} predictions per CPU-second): "
        + ", ".join(f"{part} {seconds / measured * 1e3:.1f} ms" for part, seconds in spent.items())
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
