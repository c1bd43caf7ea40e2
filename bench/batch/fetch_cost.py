"""What consuming costs a record on the batch benchmark's requests, with the batch service's consumer
settings (read_committed, its fetch sizes), from a topic of its own, deleted at the end: aiokafka's
`getmany` of up to 5,000 at a time, then the batch service's own consumer (confluent-kafka behind
`ThreadedConsumer`). CPU time (`time.process_time`, every thread) a record, and with --profile where it
goes in aiokafka's fetcher (cProfile, which slows it down, so the figure then is printed apart).

    python bench/batch/fetch_cost.py [--records 300000] [--partitions 3] [--profile]

The Kafka loop of run.py pays aiokafka's cost for every record, the service confluent-kafka's; see
bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import secrets
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO_ROOT))

from aiokafka import AIOKafkaConsumer  # noqa: E402

from bench.batch.topics import (  # noqa: E402
    FETCH_MAX_BYTES,
    PARTITION_FETCH_MAX_BYTES,
    create_topics,
    produce_requests,
)
from bench.batch.workload import RequestPool  # noqa: E402
from bench.common.infrastructure import delete_kafka_topics, infrastructure_env  # noqa: E402
from services.batch.consumer import ThreadedConsumer  # noqa: E402
from services.batch.stream import service_consumer_config  # noqa: E402

MAX_RECORDS = 5000  # the service's FLYWHEEL_BATCH_MAX_BATCH_RECORDS
TOP_FUNCTIONS = 8


async def consume_all(bootstrap: str, topic: str, records: int, profiler: cProfile.Profile | None) -> float:
    """CPU seconds to consume `records` records from `topic` with a new consumer group."""
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"{topic}-{secrets.token_hex(4)}",
        isolation_level="read_committed",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=MAX_RECORDS,
        fetch_max_bytes=FETCH_MAX_BYTES,
        max_partition_fetch_bytes=PARTITION_FETCH_MAX_BYTES,
    )
    await consumer.start()
    try:
        consumed = 0
        started = time.process_time()
        if profiler is not None:
            profiler.enable()
        while consumed < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            consumed += sum(len(batch) for batch in batches.values())
        if profiler is not None:
            profiler.disable()
        return time.process_time() - started
    finally:
        await consumer.stop()


async def consume_all_as_the_service(bootstrap: str, topic: str, records: int) -> float:
    """CPU seconds (the whole process: librdkafka's threads too) for the batch service's consumer, with its
    settings, to consume `records` records from `topic` with a new consumer group."""
    consumer = ThreadedConsumer(
        service_consumer_config(bootstrap, f"{topic}-{secrets.token_hex(4)}", "fetch-cost"),
        [topic],
        revoked=_nothing_to_let_go,
    )
    await consumer.start()
    try:
        consumed = 0
        started = time.process_time()
        while consumed < records:
            batches = await consumer.getmany(timeout_ms=1000, max_records=MAX_RECORDS)
            consumed += sum(len(batch) for batch in batches.values())
        return time.process_time() - started
    finally:
        await consumer.stop()


async def _nothing_to_let_go() -> None:
    pass


async def measure(bootstrap: str, namespace: str, records: int, partitions: int, profile: bool) -> None:
    topic = f"{namespace}.fetch-cost"
    await create_topics(bootstrap, [topic], partitions)
    produced = await produce_requests(bootstrap, topic, RequestPool().records(records, "rf"), partitions)
    print(f"{produced.records:,} requests produced into {topic}")
    seconds = await consume_all(bootstrap, topic, records, None)
    print(f"getmany: {1e6 * seconds / records:.2f} CPU µs a record (fetch, decode, a ConsumerRecord each)")
    seconds = await consume_all_as_the_service(bootstrap, topic, records)
    print(
        f"the batch service's consumer (confluent-kafka, {ThreadedConsumer.__name__}): "
        f"{1e6 * seconds / records:.2f} CPU µs a record (librdkafka's threads included)"
    )
    if profile:
        profiler = cProfile.Profile()
        seconds = await consume_all(bootstrap, topic, records, profiler)
        print(f"under cProfile: {1e6 * seconds / records:.2f} CPU µs a record; the functions taking most:")
        pstats.Stats(profiler).sort_stats("tottime").print_stats(TOP_FUNCTIONS)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=300_000, help="requests to produce and consume")
    parser.add_argument("--partitions", type=int, default=3, help="partitions of the topic")
    parser.add_argument("--profile", action="store_true", help="consume them again under cProfile")
    arguments = parser.parse_args(argv)
    bootstrap = infrastructure_env(REPO_ROOT)["FLYWHEEL_KAFKA_BOOTSTRAP"]
    namespace = f"bench-{secrets.token_hex(4)}"
    try:
        asyncio.run(measure(bootstrap, namespace, arguments.records, arguments.partitions, arguments.profile))
    finally:
        delete_kafka_topics(bootstrap, namespace)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
