"""The alert stream: events fanned out in process to server-sent-events clients, with bounded memory.

Each replica feeds its hub from a Kafka consumer group of its own (every replica sees every event), and
each client listens through a queue of `alert_stream_queue_size` events. A client that falls that far
behind is disconnected rather than allowed to grow the queue; it reconnects with `Last-Event-ID` and the
hub replays what it missed from the last `alert_stream_replay_size` events.

A stream ends after `alert_stream_max_seconds`, and well-behaved clients (browsers' EventSource, `flywheel
alerts tail`) reconnect at once: the server does not learn that it is stopping until its open responses
end, so streams that never ended would hold up every shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import AsyncGenerator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prometheus_client import Counter

from services.monitor.alert_filters import AlertFilter, AlertNotice, notice_of
from shared.events import CloudEvent

log = logging.getLogger(__name__)

RECONNECT_MILLISECONDS = 1000  # what EventSource waits before reconnecting after a stream ends

CLIENTS_DROPPED = Counter(
    "flywheel_monitor_alert_stream_clients_dropped_total",
    "Alert stream clients disconnected for falling behind",
)


@dataclass(frozen=True, slots=True)
class StreamedEvent:
    topic: str
    notice: AlertNotice
    id: str
    body: bytes  # the CloudEvent's JSON


def server_sent_event(event: StreamedEvent) -> bytes:
    """One event in the text/event-stream format: its id, its topic as the event name, its JSON as data."""
    data = b"".join(b"data: " + line + b"\n" for line in event.body.splitlines())
    return b"id: " + event.id.encode() + b"\nevent: " + event.topic.encode() + b"\n" + data + b"\n"


class AlertListener:
    """One client's view of the hub: the events its filter accepts, in order; None once disconnected."""

    def __init__(self, accepts: AlertFilter, queue_size: int) -> None:
        self.filter = accepts
        self.queue: asyncio.Queue[StreamedEvent | None] = asyncio.Queue(queue_size + 1)  # + the end mark
        self.queue_size = queue_size
        self.disconnected = False

    def offer(self, event: StreamedEvent) -> bool:
        """Queue the event if it is wanted; False when the client is too far behind to take it."""
        if self.disconnected or not self.filter.accepts(event.notice):
            return True
        if self.queue.qsize() >= self.queue_size:
            return False
        self.queue.put_nowait(event)
        return True

    def disconnect(self) -> None:
        """Forget what is queued (the client could not keep up with it anyway) and end the stream."""
        self.disconnected = True
        while not self.queue.empty():
            self.queue.get_nowait()
        self.queue.put_nowait(None)

    async def next(self) -> StreamedEvent | None:
        return await self.queue.get()


class AlertHub:
    def __init__(self, queue_size: int, replay_size: int) -> None:
        self.queue_size = queue_size
        self.listeners: set[AlertListener] = set()
        self.recent: deque[StreamedEvent] = deque(maxlen=replay_size)

    def publish(self, topic: str, event: CloudEvent, notice: AlertNotice | None = None) -> None:
        """Hand the event, read from `topic`, to every listener that wants it; disconnect the ones that
        cannot take it. `notice`: what filters see of it (default: `notice_of` it, with no workspace)."""
        streamed = StreamedEvent(topic, notice or notice_of(topic, event), event.id, event.to_json())
        if self.recent.maxlen:
            self.recent.append(streamed)
        for listener in list(self.listeners):
            if not listener.offer(streamed):
                self._drop(listener)

    @contextmanager
    def listen(self, accepts: AlertFilter, last_event_id: str | None = None) -> Iterator[AlertListener]:
        """A listener for the duration of the block; with `last_event_id`, first the recent events after
        that one (at most a queue's worth, the newest)."""
        listener = AlertListener(accepts, self.queue_size)
        if last_event_id:
            for missed in self._since(last_event_id, accepts)[-self.queue_size :]:
                listener.offer(missed)
        self.listeners.add(listener)
        try:
            yield listener
        finally:
            self.listeners.discard(listener)

    def close(self) -> None:
        """End every stream."""
        for listener in list(self.listeners):
            listener.disconnect()
        self.listeners.clear()

    def _since(self, last_event_id: str, accepts: AlertFilter) -> list[StreamedEvent]:
        recent = list(self.recent)
        for index in range(len(recent) - 1, -1, -1):
            if recent[index].id == last_event_id:
                return [event for event in recent[index + 1 :] if accepts.accepts(event.notice)]
        return []  # too old, or from another replica: nothing to replay

    def _drop(self, listener: AlertListener) -> None:
        self.listeners.discard(listener)
        listener.disconnect()
        CLIENTS_DROPPED.inc()
        log.warning("alert stream client fell behind and was disconnected", extra={"queue": self.queue_size})


async def event_stream(
    hub: AlertHub,
    accepts: AlertFilter,
    *,
    last_event_id: str | None,
    keepalive_seconds: float,
    max_seconds: float,
) -> AsyncGenerator[bytes, None]:
    """The body of a text/event-stream response: the events `accepts` wants as they come, a comment when
    idle for `keepalive_seconds` (so that proxies and clients know the stream lives), for `max_seconds`."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + max_seconds
    with hub.listen(accepts, last_event_id) as listener:
        yield f"retry: {RECONNECT_MILLISECONDS}\n: listening\n\n".encode()
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(keepalive_seconds, remaining)):
                    event = await listener.next()
            except TimeoutError:
                yield b": keep-alive\n\n"
                continue
            if event is None:
                return
            yield server_sent_event(event)
