"""The heartbeat of a running job (batch file jobs, training jobs): it beats while the block runs, goes on
after a failed beat, and stops with the block."""

from __future__ import annotations

import asyncio

from shared.heartbeat import heartbeat


async def test_a_failed_beat_does_not_stop_the_next_ones_and_the_block_ending_stops_them_all() -> None:
    beats: list[int] = []
    fifth = asyncio.Event()

    async def beat() -> None:
        beats.append(len(beats))
        if len(beats) == 5:
            fifth.set()
        if len(beats) == 2:
            raise ConnectionError("the database is away for a moment")

    async with heartbeat(beat, every_seconds=0.01, name="heartbeat:test"):
        await asyncio.wait_for(fifth.wait(), timeout=5)
    ended_with = len(beats)
    await asyncio.sleep(0.05)

    assert ended_with >= 5
    assert len(beats) == ended_with
