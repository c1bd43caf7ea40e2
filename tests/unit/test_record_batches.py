"""Record batches written from columns: byte for byte what aiokafka's own builder writes for the same
records (so the broker takes them as it takes aiokafka's), and the stream's writer cutting its results
into batches that fit. Sending them in real transactions: tests/integration/test_batch_stream.py."""

from __future__ import annotations

import random

import numpy as np
import pytest
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from services.batch.record_batches import HEADER_SIZE, Parts, ResultBatch, encode_records, varint, varints
from services.batch.stream import PartitionWriter

TIMESTAMP_MS = 1_767_225_600_123


def aiokafka_batch(
    keys: list[bytes | None], values: list[bytes], headers: list[list[tuple[str, bytes]]]
) -> bytes:
    builder = DefaultRecordBatchBuilder(
        2, 0, is_transactional=1, producer_id=-1, producer_epoch=-1, base_sequence=0, batch_size=1 << 26
    )
    for offset, (key, value, record_headers) in enumerate(zip(keys, values, headers, strict=True)):
        assert builder.append(offset, TIMESTAMP_MS, key=key, value=value, headers=record_headers)
    builder.set_producer_state(4242, 3, 17)
    return bytes(builder.build())


def joined(parts: Parts, row: int) -> bytes:
    return b"".join(part if isinstance(part, bytes) else part[row] for part in parts)


@pytest.mark.parametrize("seed", range(40))
def test_batches_are_byte_for_byte_aiokafkas(seed: int) -> None:
    """Keys missing, empty and long; values and header values of every varint size; records added in
    chunks of any size, the offset deltas going on from the last."""
    rng = random.Random(seed)
    count = rng.randint(1, 400)
    keys = [
        None if rng.random() < 0.1 else rng.randbytes(rng.choice([0, 3, 70, 20_000])) for _ in range(count)
    ]
    middles = [rng.randbytes(rng.choice([0, 5, 63, 64, 8191, 8192, 70_000])) for _ in range(count)]
    ids = [rng.randbytes(rng.randint(0, 30)) for _ in range(count)]
    value: Parts = [b"{", middles, b"}"]
    headers: list[tuple[str, Parts]] = [
        ("ce_id", [b"topic-1-", ids]),
        ("ce_type", [b"t.v1"]),
        ("empty", [b""]),
    ]

    batch = ResultBatch(1 << 26, TIMESTAMP_MS)
    start = 0
    while start < count:
        end = min(count, start + rng.randint(1, 120))
        records, sizes = encode_records(
            batch.record_count(),
            keys[start:end],
            [part if isinstance(part, bytes) else part[start:end] for part in value],
            [(name, [p if isinstance(p, bytes) else p[start:end] for p in parts]) for name, parts in headers],
        )
        assert len(records) == sizes.sum()
        assert len(sizes) == end - start
        batch.add(records, end - start)
        start = end
    batch._set_producer_state(4242, 3, 17)

    expected = aiokafka_batch(
        keys,
        [joined(value, row) for row in range(count)],
        [[(name, joined(parts, row)) for name, parts in headers] for row in range(count)],
    )
    assert batch._build() == expected
    assert batch.size() == len(expected)
    assert DefaultRecordBatch(expected).validate_crc()


def test_offset_deltas_beyond_the_varint_table() -> None:
    first = 20_000
    records, sizes = encode_records(first, [b"k", b"k"], [b"v"], [])
    expected_delta = varint(first)
    assert records.startswith(varint(int(sizes[0]) - 1) + b"\x00\x00" + expected_delta)
    assert varints(np.array([0, 63, 64, 16_383, 16_384, 1 << 40, -1])) == [
        varint(value) for value in (0, 63, 64, 16_383, 16_384, 1 << 40, -1)
    ]


def test_room_counts_the_records_that_still_fit() -> None:
    batch = ResultBatch(HEADER_SIZE + 100, TIMESTAMP_MS)
    sizes = np.array([40, 40, 40])
    assert batch.room(sizes) == 2
    batch.add(b"x" * 80, 2)
    assert batch.room(np.array([20])) == 1
    assert batch.room(np.array([21])) == 0
    assert (
        ResultBatch(HEADER_SIZE + 10, TIMESTAMP_MS).room(np.array([500])) == 1
    )  # one always fits an empty batch


def test_the_writer_starts_a_new_batch_when_one_is_full() -> None:
    """Every record once, in order, offset deltas from 0 in each batch, and no batch over its size."""
    max_size = 2_000
    writer = PartitionWriter(producer=None, timestamp_ms=TIMESTAMP_MS, max_batch_bytes=max_size)
    written: list[bytes] = []
    for chunk in range(5):
        values = [b"value %d-%d " % (chunk, index) + b"x" * (index % 90) for index in range(60)]
        written += values
        keys: list[bytes | None] = [b"k"] * len(values)
        writer.add("results", 4, keys, [values], [("ce_id", [b"id"])])
    batches = writer.batches()
    assert len(batches) > 5
    read: list[bytes] = []
    for topic, source_partition, batch in batches:
        assert (topic, source_partition) == ("results", 4)
        batch._set_producer_state(1, 0, 0)
        buffer = batch._build()
        assert len(buffer) <= max_size
        records = list(DefaultRecordBatch(buffer))
        assert [record.offset for record in records] == list(range(len(records)))
        read += [record.value for record in records]
    assert read == written
