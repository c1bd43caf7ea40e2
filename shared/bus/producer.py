"""The bus's producer: librdkafka's (confluent-kafka), behind an awaitable send.

librdkafka batches, checksums and writes records in threads of its own, outside the GIL; a delivery report
then settles the sender's future on its event loop. aiokafka's producer did that work on the event loop, in
Python: publishing a 432 KB prediction-logged event cost it 2.4-2.6 ms of CPU, librdkafka 0.7 ms, and
serving publishes one every 20 requests of 100 rows (bench/README.md, "Seventh session").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from typing import Any

import confluent_kafka

log = logging.getLogger(__name__)

POLL_SECONDS = 0.1
QUEUE_FULL_WAIT_SECONDS = 0.01
# As long as aiokafka's producer tried to deliver a record before failing its send (request_timeout_ms).
DELIVERY_TIMEOUT_MS = 40_000
# The producer's limit on a request, as aiokafka's max_request_size: shared.bus.MAX_RECORD_BYTES leaves
# room in it for a record's key, headers and framing.
MAX_REQUEST_BYTES = 1_048_576


class KafkaProducer:
    """An idempotent, acks=all producer: `send` returns once every in-sync replica has the record, or
    raises `confluent_kafka.KafkaException` when it could not be delivered within DELIVERY_TIMEOUT_MS."""

    def __init__(self, bootstrap_servers: str, client_id: str) -> None:
        self._producer = confluent_kafka.Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 5,
                "message.timeout.ms": DELIVERY_TIMEOUT_MS,
                "message.max.bytes": MAX_REQUEST_BYTES,
                "logger": log,
            }
        )
        self._closed = threading.Event()
        # Delivery reports (and librdkafka's logs) are served by poll(), here in a thread of their own.
        self._poller = threading.Thread(target=self._poll, name=f"{client_id}-deliveries", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(POLL_SECONDS)

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: list[tuple[str, str | bytes | None]]
    ) -> None:
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: confluent_kafka.KafkaError | None, message: Any) -> None:
            # RuntimeError: the loop closed while the record was in flight, and nobody waits for it.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, delivered, error)

        while True:
            try:
                self._producer.produce(topic, value, key, headers=headers, on_delivery=report)
                break
            except BufferError:  # librdkafka's queue is full: wait for deliveries to make room
                await asyncio.sleep(QUEUE_FULL_WAIT_SECONDS)
        await delivered

    async def ready(self, timeout_seconds: float = 5.0) -> bool:
        """A broker answers a metadata request now."""
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=timeout_seconds)
        except confluent_kafka.KafkaException:
            return False
        return True

    async def close(self, timeout_seconds: float = 10.0) -> None:
        """Deliver what is queued (within the timeout), then stop polling."""
        left = await asyncio.to_thread(self._producer.flush, timeout_seconds)
        if left:
            log.error("producer closed with undelivered records", extra={"records": left})
            self._producer.purge()  # their senders get a delivery report (an error) from the next poll
        self._closed.set()
        await asyncio.to_thread(self._poller.join)
        await asyncio.to_thread(self._producer.poll, 0)


def _settle(delivered: asyncio.Future[None], error: confluent_kafka.KafkaError | None) -> None:
    if delivered.done():  # the sender was cancelled
        return
    if error is None:
        delivered.set_result(None)
    else:
        delivered.set_exception(confluent_kafka.KafkaException(error))
