"""The HTTP protocol every service runs: the writes of one turn of the event loop (a response's head and
body) go out in one write; a large response goes at once; closing sends what is pending first."""

from __future__ import annotations

import asyncio

from shared.http_protocol import MAX_BUFFERED_BYTES, CoalescingTransport


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str) -> str:
        return f"info:{name}"


async def test_the_writes_of_one_turn_go_out_as_one() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
    transport.write(b"{}")
    assert real.writes == []
    await asyncio.sleep(0)
    assert real.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"]
    transport.write(b"next")
    await asyncio.sleep(0)
    assert real.writes[1:] == [b"next"]


async def test_a_large_response_is_written_at_once() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"head")
    transport.write(b"x" * MAX_BUFFERED_BYTES)
    assert real.writes == [b"head" + b"x" * MAX_BUFFERED_BYTES]
    await asyncio.sleep(0)
    assert len(real.writes) == 1


async def test_closing_sends_what_is_pending_first_and_nothing_after() -> None:
    real = RecordingTransport()
    transport = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"bye")
    transport.close()
    assert real.writes == [b"bye"]
    assert real.closed
    transport.write(b"late")
    await asyncio.sleep(0)
    assert real.writes == [b"bye"]


async def test_everything_else_is_the_real_transports() -> None:
    transport = CoalescingTransport(RecordingTransport(), asyncio.get_running_loop())  # type: ignore[arg-type]
    assert transport.get_extra_info("peername") == "info:peername"
    assert not transport.is_closing()
