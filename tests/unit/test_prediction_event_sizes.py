"""Prediction events sized for Kafka: rows are halved until each event fits in a record."""

from __future__ import annotations

from collections.abc import Callable

from shared.bus import MAX_RECORD_BYTES
from shared.prediction_events import events_that_fit


def sized(row_bytes: dict[int, int]) -> tuple[list[slice], Callable[[slice], bytes]]:
    """An encoder whose event for rows [a, b) is the sum of their sizes, recording each call."""
    calls: list[slice] = []

    def encode(part: slice) -> bytes:
        calls.append(part)
        return b"x" * sum(row_bytes[row] for row in range(part.start, part.stop))

    return calls, encode


def test_rows_that_fit_are_one_event() -> None:
    calls, encode = sized(dict.fromkeys(range(10), 100))
    assert [part for part, _ in events_that_fit(encode, slice(0, 10))] == [slice(0, 10)]
    assert calls == [slice(0, 10)]


def test_rows_too_large_together_are_halved_in_order_until_each_event_fits() -> None:
    _, encode = sized(dict.fromkeys(range(5, 15), 300_000))
    parts = [part for part, event in events_that_fit(encode, slice(5, 15)) if len(event) <= MAX_RECORD_BYTES]
    assert [(part.start, part.stop) for part in parts] == [(5, 7), (7, 10), (10, 12), (12, 15)]


def test_a_row_too_large_alone_is_left_out_and_the_others_still_go() -> None:
    _, encode = sized({0: 10, 1: MAX_RECORD_BYTES + 1, 2: 10})
    events = list(events_that_fit(encode, slice(0, 3)))
    assert [(part.start, part.stop) for part, _ in events] == [(0, 1), (2, 3)]
    assert all(len(event) <= MAX_RECORD_BYTES for _, event in events)
    assert list(events_that_fit(encode, slice(3, 3))) == []
