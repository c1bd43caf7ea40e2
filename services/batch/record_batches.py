"""Kafka record batches (the v2 format) written from columns of records, for the scoring stream's results.

aiokafka's `BatchBuilder.append` costs about 1.1 µs of Python a record with the six CloudEvents headers
a result carries, more than the rest of writing it. Here a whole slice of records is one `bytes.join`:
each record's key, value and header values are given as parts (a constant shared by every record, or a
column with each record's own bytes), the varints in front of them come from lookup tables, and the
pieces of every record are interleaved by slice assignment, all in C calls over the whole slice.

`ResultBatch` is sent with `AIOKafkaProducer.send_batch` in place of a `BatchBuilder`: it offers the
methods aiokafka's accumulator and sender call on one (aiokafka 0.12-0.14: `record_count`, `size`,
`append`, `close`, `closed`, `_set_producer_state`, `_build`), and builds the batch's header, with its
producer state and CRC-32C, when the sender asks for the bytes. A unit test compares its bytes with
aiokafka's own builder's, and the stream's integration tests send them through real transactions.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
from aiokafka.record._crecords.cutil import crc32c_cython

# Each record's bytes: these parts joined. A part is a constant (every record's) or a column (each record's
# own bytes, one per record).
Parts = Sequence[bytes | Sequence[bytes]]

MAGIC = 2
TRANSACTIONAL = 0x10  # the batch attributes' bit; no compression, timestamps set by the producer
# Everything in a batch's header from its attributes on, which the CRC covers with the records:
# attributes, last offset delta, first and max timestamp, producer id and epoch, base sequence, count.
_HEADER_AFTER_CRC = struct.Struct(">hiqqqhii")
# What comes before it: base offset, batch length, partition leader epoch, magic, CRC.
_HEADER_BEFORE_CRC = struct.Struct(">qiibI")
HEADER_SIZE = _HEADER_BEFORE_CRC.size + _HEADER_AFTER_CRC.size  # 61
# The batch length counts the bytes after itself.
_LENGTH_EXCLUDES = 12


def varint(value: int) -> bytes:
    """`value` as Kafka writes a varint: zigzag, then 7 bits a byte, least significant first."""
    zigzag = (value << 1) ^ (value >> 63)
    out = bytearray()
    while zigzag >= 0x80:
        out.append((zigzag & 0x7F) | 0x80)
        zigzag >>= 7
    out.append(zigzag)
    return bytes(out)


_TABLE_SIZE = 1 << 14
_VARINTS = [varint(value) for value in range(_TABLE_SIZE)]


def varints(values: np.ndarray) -> list[bytes]:
    """Each value's varint: from the table (every value from 0 to 16,383), else encoded one by one."""
    if len(values) and (values.min() < 0 or values.max() >= _TABLE_SIZE):
        return [_VARINTS[value] if 0 <= value < _TABLE_SIZE else varint(value) for value in values.tolist()]
    return list(map(_VARINTS.__getitem__, values.tolist()))


def _merged(parts: Parts) -> list[bytes | Sequence[bytes]]:
    """The same parts with neighbouring constants joined (fewer pieces to interleave)."""
    merged: list[bytes | Sequence[bytes]] = []
    for part in parts:
        if isinstance(part, bytes):
            if not part:
                continue
            if merged and isinstance(merged[-1], bytes):
                merged[-1] += part
                continue
        merged.append(part)
    return merged


Lengths = int | np.ndarray  # one for every record, or each record's


def _lengths(parts: Sequence[bytes | Sequence[bytes]], count: int, known: dict[int, np.ndarray]) -> Lengths:
    """Each record's length of the parts joined (`known`: the lengths of columns met before, by id)."""
    lengths: Lengths = sum(len(part) for part in parts if isinstance(part, bytes))
    for part in parts:
        if not isinstance(part, bytes):
            column = known.get(id(part))
            if column is None:
                column = known[id(part)] = np.fromiter(map(len, part), dtype=np.int64, count=count)
            lengths = lengths + column
    return lengths


def _varint_field(lengths: Lengths) -> bytes | list[bytes]:
    return varint(lengths) if isinstance(lengths, int) else varints(lengths)


# The least zigzag value whose varint takes 2, 3, ... bytes.
_VARINT_LIMITS = np.array([1 << bits for bits in range(7, 63, 7)], dtype=np.int64)


def _varint_sizes(values: Lengths) -> Lengths:
    """How many bytes each value's varint takes."""
    if isinstance(values, int):
        return len(varint(values))
    zigzag = np.where(values >= 0, values << 1, (-values << 1) - 1)
    return np.searchsorted(_VARINT_LIMITS, zigzag, side="right") + 1


def encode_records(
    first_offset_delta: int,
    keys: Sequence[bytes | None],
    value: Parts,
    headers: Sequence[tuple[str, Parts]],
) -> tuple[bytes, np.ndarray]:
    """The records, one per key, as they follow a batch's header (offset deltas counted from
    `first_offset_delta`, timestamp deltas 0), and each record's size in bytes."""
    count = len(keys)
    if count == 0:
        return b"", np.zeros(0, dtype=np.int64)
    known: dict[int, np.ndarray] = {}
    # Each record: length, attributes (0), timestamp delta (0), offset delta, key length (-1 for none), key,
    # value length, value, header count, then each header's key length, key, value length and value.
    if None in keys:
        key_lengths = np.array([-1 if key is None else len(key) for key in keys], dtype=np.int64)
        present_keys: Sequence[bytes] = [b"" if key is None else key for key in keys]
    else:
        present_keys = keys  # type: ignore[assignment]  # no None among them
        key_lengths = np.fromiter(map(len, present_keys), dtype=np.int64, count=count)
        known[id(present_keys)] = key_lengths
    deltas = np.arange(first_offset_delta, first_offset_delta + count)
    value = _merged(value)
    value_lengths = _lengths(value, count, known)
    fields: list[bytes | Sequence[bytes]] = [
        b"\x00\x00",  # attributes, timestamp delta
        _VARINTS[first_offset_delta : first_offset_delta + count]
        if first_offset_delta + count <= _TABLE_SIZE
        else varints(deltas),
        varints(key_lengths),
        present_keys,
        _varint_field(value_lengths),
        *value,
        varint(len(headers)),
    ]
    body_lengths = (
        2
        + _varint_sizes(deltas)
        + _varint_sizes(key_lengths)
        + np.maximum(key_lengths, 0)
        + _varint_sizes(value_lengths)
        + value_lengths
        + len(varint(len(headers)))
    )
    for name, header_value in headers:
        encoded_name = name.encode()
        header_value = _merged(header_value)
        header_lengths = _lengths(header_value, count, known)
        fields += [varint(len(encoded_name)) + encoded_name, _varint_field(header_lengths), *header_value]
        body_lengths += (
            len(varint(len(encoded_name)))
            + len(encoded_name)
            + _varint_sizes(header_lengths)
            + header_lengths
        )
    columns = _merged([varints(body_lengths), *fields])
    pieces: list[bytes] = [b""] * (count * len(columns))
    for position, column in enumerate(columns):
        pieces[position :: len(columns)] = [column] * count if isinstance(column, bytes) else column
    return b"".join(pieces), body_lengths + _varint_sizes(body_lengths)


class ResultBatch:
    """One record batch of results for one partition, filled with `add` and sent with
    `AIOKafkaProducer.send_batch` (see the module docstring)."""

    def __init__(self, max_size: int, timestamp_ms: int, *, transactional: bool = True) -> None:
        self.max_size = max_size
        self.timestamp_ms = timestamp_ms
        self.transactional = transactional
        self._chunks: list[bytes] = []
        self._count = 0
        self._size = HEADER_SIZE
        self._closed = False
        self._producer_state = (-1, -1, -1)
        self._buffer: bytes | None = None

    def room(self, sizes: np.ndarray) -> int:
        """How many of records of these sizes (in order) still fit: at least one in an empty batch."""
        fits = int(np.searchsorted(np.cumsum(sizes), self.max_size - self._size, side="right"))
        return max(fits, 1) if self._count == 0 else fits

    def add(self, records: bytes, count: int) -> None:
        """Records encoded with `encode_records` from offset delta `record_count()`."""
        assert not self._closed
        self._chunks.append(records)
        self._count += count
        self._size += len(records)

    # ---- what aiokafka's accumulator and sender call

    def record_count(self) -> int:
        return self._count

    def size(self) -> int:
        return self._size if self._buffer is None else len(self._buffer)

    def append(self, **_: object) -> None:
        return None  # full: a result batch takes no single message

    def close(self) -> None:
        self._closed = True

    def closed(self) -> bool:
        return self._closed

    def _set_producer_state(self, producer_id: int, producer_epoch: int, base_sequence: int) -> None:
        self._producer_state = (producer_id, producer_epoch, base_sequence)

    def _build(self) -> bytes:
        self.close()
        if self._buffer is None:
            after_crc = _HEADER_AFTER_CRC.pack(
                TRANSACTIONAL if self.transactional else 0,
                self._count - 1,
                self.timestamp_ms,
                self.timestamp_ms,
                *self._producer_state,
                self._count,
            )
            body = after_crc + b"".join(self._chunks)
            length = _HEADER_BEFORE_CRC.size - _LENGTH_EXCLUDES + len(body)
            before_crc = _HEADER_BEFORE_CRC.pack(0, length, -1, MAGIC, crc32c_cython(body))
            self._buffer = before_crc + body
            self._chunks = []
        return self._buffer
