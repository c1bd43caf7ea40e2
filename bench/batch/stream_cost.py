"""What the scoring stream's own work costs a record, with Kafka out of the picture: the batch service's
`ScoringStream` parses, scores and writes the benchmark's requests (`workload.py`, batches of 5,000 on
one partition) into record batches that are never sent, one batch after the other as the service goes.
CPU time (`getrusage`, every thread, onnxruntime's included; user and system apart) and minor page faults
a record, per stage, from the round with the least CPU; the garbage collector as the service sets it. A
steadier way to compare two versions of the stream's Python than the end-to-end benchmark, whose rates
move by a third with the machine's load (it still moves by about 0.3 µs: compare in turns).

    python bench/batch/stream_cost.py [--batches 20] [--rounds 3] [--records 5000] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
if str(REPO_ROOT) not in sys.path:  # run as a script: make `bench` importable
    sys.path.insert(0, str(REPO_ROOT))

import onnxruntime  # noqa: E402
from aiokafka import AIOKafkaProducer, TopicPartition  # noqa: E402

from bench.batch.workload import RequestPool  # noqa: E402
from bench.serving.workload import build_models  # noqa: E402
from services.batch.consumer import Batches, PartitionRecords  # noqa: E402
from services.batch.requests import batch_headers, features_for  # noqa: E402
from services.batch.scoring import ScoringModels, ScoringVersion  # noqa: E402
from services.batch.settings import BatchSettings, RequestTopic  # noqa: E402
from services.batch.stream import PartitionWriter, ScoringStream, scored_parts  # noqa: E402
from services.registry.onnx_inspection import inspect_model  # noqa: E402
from shared.model_versions import VersionRecord, session_options  # noqa: E402
from shared.service import garbage_collector_for_throughput  # noqa: E402

TOPIC = "scoring-requests"


class _Bus:
    """What the stream asks of its bus before it starts: names as the cluster knows them."""

    bootstrap_servers = "127.0.0.1:9"  # never connected to
    client_id = "stream-cost"

    def cluster_name(self, name: str) -> str:
        return name


def consumed_batches(records: int, batches: int) -> list[Batches]:
    """`batches` batches of `records` requests each, as the consumer hands them to the stream."""
    pool = RequestPool()
    stream = list(pool.records(records * batches, "rf"))
    partition = TopicPartition(TOPIC, 0)
    batched = []
    for start in range(0, records * batches, records):
        offsets = list(range(start, start + records))
        keys: list[bytes | None] = [stream[offset][0] for offset in offsets]
        values: list[bytes | None] = [stream[offset][1] for offset in offsets]
        batched.append({partition: PartitionRecords(offsets, keys, values)})
    return batched


async def measure(args: argparse.Namespace) -> None:
    with garbage_collector_for_throughput():
        await _measure(args)


async def _measure(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as directory:
        (model,) = build_models(["rf"], 100, Path(directory))
        signature = inspect_model(model.onnx_path)
        session = onnxruntime.InferenceSession(
            str(model.onnx_path), session_options(args.threads), providers=["CPUExecutionProvider"]
        )
    record = VersionRecord(name="rf", version=1, artifact_uri="", artifact_sha256="", signature=signature)
    version = ScoringVersion(record, session)
    models = ScoringModels(_unused_describe, artifacts=None, intra_op_threads=args.threads)  # type: ignore[arg-type]
    settings = BatchSettings(request_topics={TOPIC: RequestTopic(model="rf", result_topic="scoring-results")})
    stream = ScoringStream(_Bus(), models, settings)  # type: ignore[arg-type]
    producer = AIOKafkaProducer(bootstrap_servers=_Bus.bootstrap_servers, max_batch_size=1024 * 1024)
    batches = consumed_batches(args.records, args.batches)
    headers = batch_headers(b"2026-01-01T00:00:00+00:00")

    figures: dict[str, list[Usage]] = {"parse": [], "score": [], "write": []}
    for _ in range(args.rounds):
        gc.collect()
        round_usage = {name: Usage() for name in figures}
        # Batch by batch, as the stream goes (nothing of a batch is kept once it is written): the memory a
        # batch allocates is freed before the next, as in the service.
        for batch in batches:
            before = Usage.now()
            requests, dead = await stream._parse(batch)
            assert not dead
            (parts,) = requests.values()
            parsed = Usage.now()
            scored = await models.score(version, features_for(parts, version.signature))
            done_scoring = Usage.now()
            writer = PartitionWriter(producer, 0)
            for part, outputs, rejected in scored_parts(parts, scored):
                assert not rejected
                stream._write_results(writer, version, part, outputs, headers)
            written = Usage.now()
            round_usage["parse"] += parsed - before
            round_usage["score"] += done_scoring - parsed
            round_usage["write"] += written - done_scoring
            del requests, parts, scored, writer
        for name, usage in round_usage.items():
            figures[name].append(usage)
    records = args.records * args.batches
    print(
        f"CPU µs a record, user + system, and page faults a record ({args.batches} batches of "
        f"{args.records:,}, the round with the least CPU of {args.rounds}):"
    )
    total = Usage()
    for name, usages in figures.items():
        best = min(usages, key=lambda usage: usage.user + usage.system)
        total += best
        print(f"  {name:<6} {best.describe(records)}")
    print(f"  {'all':<6} {total.describe(records)}")
    await producer.stop()  # never started: only marks it closed


@dataclass
class Usage:
    """CPU seconds (every thread of the process) and minor page faults."""

    user: float = 0.0
    system: float = 0.0
    faults: int = 0

    @classmethod
    def now(cls) -> Usage:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return cls(usage.ru_utime, usage.ru_stime, usage.ru_minflt)

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.user + other.user, self.system + other.system, self.faults + other.faults)

    def __sub__(self, other: Usage) -> Usage:
        return Usage(self.user - other.user, self.system - other.system, self.faults - other.faults)

    def describe(self, records: int) -> str:
        user, system = self.user / records * 1e6, self.system / records * 1e6
        return f"{user + system:6.2f} = {user:5.2f} + {system:5.2f}  faults {self.faults / records:5.2f}"


async def _unused_describe(name: str, version: int | None, alias: str | None) -> VersionRecord | None:
    raise AssertionError("the harness scores a version it loaded itself")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--records", type=int, default=5000, help="records a batch (the service's default)")
    parser.add_argument("--batches", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime intra-op threads (a worker's)")
    asyncio.run(measure(parser.parse_args()))


if __name__ == "__main__":
    main()
