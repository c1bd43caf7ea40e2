"""The bus's producer: librdkafka (confluent-kafka) behind an awaitable `send`.

Why not aiokafka's producer, which the consumers use: aiokafka builds record batches, computes their CRC32C
and writes the produce requests in Python on the caller's event loop. Serving logs every prediction, about
22 KB of JSON a 100-row request: at 800 such requests a second in events of 20, publishing them took 93 µs
of CPU a request with aiokafka, all on the event loop, and 35 µs with librdkafka, 4 of them on the event
loop (the rest in its own C threads and the poll thread; bench/README.md, serving, eleventh session).

librdkafka calls back with each message's delivery report only from `poll`, so one thread of this producer's
own polls, and each report settles the sender's future on its event loop. The producer is idempotent with
acks=all, as aiokafka's was: librdkafka retries a failed request itself, keeping order, and reports a failure
only once `message.timeout.ms` has passed without success.

No linger (aiokafka's was 5 ms): the bus's publishers wait for each message before the next (the prediction
log, the outbox), so a linger only delayed every message. A 433 KB prediction-log event took 6.96 ms to
deliver with 5 ms and 0.89 ms without, and 831 against 328 µs of CPU. Messages produced while a request is
in flight still go out together in the next one.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence

from confluent_kafka import KafkaError, KafkaException, Message, Producer

POLL_SECONDS = 0.1
# aiokafka's max_request_size: a record of MAX_RECORD_BYTES (shared.bus.base) with its key and headers fits.
MAX_MESSAGE_BYTES = 1_048_576
DELIVERY_TIMEOUT_MS = 30_000  # how long librdkafka keeps retrying one message before reporting it failed
QUEUE_FULL_WAIT_SECONDS = 0.005


class PublishFailed(Exception):
    """Kafka did not take a message: librdkafka's error, after its own retries."""


class KafkaProducer:
    def __init__(
        self,
        bootstrap_servers: str,
        *,
        client_id: str,
        delivery_timeout_ms: int = DELIVERY_TIMEOUT_MS,
    ) -> None:
        self._producer = Producer(
            {
                "bootstrap.servers": bootstrap_servers,
                "client.id": client_id,
                "acks": "all",
                "enable.idempotence": True,
                "linger.ms": 0,  # see the module's docstring
                "message.max.bytes": MAX_MESSAGE_BYTES,
                "message.timeout.ms": delivery_timeout_ms,
            }
        )
        self._stopping = threading.Event()
        self._poller: threading.Thread | None = None

    def start(self) -> None:
        self._stopping.clear()
        self._poller = threading.Thread(target=self._poll_forever, name="kafka-producer-poll", daemon=True)
        self._poller.start()

    async def stop(self, timeout: float = 10.0) -> None:  # noqa: ASYNC109 (librdkafka's flush timeout)
        """Deliver what is queued (within `timeout`), then stop polling."""
        await asyncio.to_thread(self._producer.flush, timeout)
        self._stopping.set()
        if self._poller is not None:
            await asyncio.to_thread(self._poller.join)
            self._poller = None

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Queue the message and wait until Kafka has it (all in-sync replicas); `PublishFailed` if not."""
        loop = asyncio.get_running_loop()
        delivered: asyncio.Future[None] = loop.create_future()

        def report(error: KafkaError | None, _message: Message) -> None:  # on the poll thread
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
                loop.call_soon_threadsafe(_settle, delivered, error)

        while True:
            try:
                self._producer.produce(topic, value, key, headers=list(headers), on_delivery=report)
                break
            except BufferError:  # librdkafka's queue is full: let it drain
                await asyncio.sleep(QUEUE_FULL_WAIT_SECONDS)
            except KafkaException as error:  # refused before queueing, e.g. too large
                raise PublishFailed(str(error.args[0])) from error
        await delivered

    async def cluster_answers(self, timeout: float = 5.0) -> bool:  # noqa: ASYNC109 (librdkafka's own)
        """A broker answers a metadata request now."""
        try:
            await asyncio.to_thread(self._producer.list_topics, timeout=timeout)
        except KafkaException:
            return False
        return True

    def _poll_forever(self) -> None:
        while not self._stopping.is_set():
            self._producer.poll(POLL_SECONDS)


def _settle(delivered: asyncio.Future[None], error: KafkaError | None) -> None:
    if delivered.done():  # the sender was cancelled
        return
    if error is None:
        delivered.set_result(None)
    else:
        delivered.set_exception(PublishFailed(error.str()))
