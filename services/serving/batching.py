"""Adaptive micro-batching: concurrent requests for one model version merged into one inference call.

Knows nothing of HTTP. Each request is a dict of input name -> array whose first axis is its rows. A
request waits only while the model is busy: when a batch slot is free and nothing else is queued it
runs at once, so a lone request pays no batching delay; under load the queue fills while batches run,
and the next batch takes up to `max_batch_size` rows, or what arrived within `max_wait_seconds`.
Inference runs off the event loop, in the executor. A batch whose call fails is retried request by
request, so one bad request never fails the others merged with it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from shared.tensors import Tensors

Infer = Callable[[Tensors], Tensors]


class BatcherStopped(RuntimeError):
    """The model was unloaded while the request waited."""


@dataclass
class _Request:
    inputs: Tensors
    rows: int
    answer: asyncio.Future[Tensors] = field(repr=False)


class AdaptiveBatcher:
    def __init__(
        self,
        infer: Infer,
        *,
        max_batch_size: int = 64,
        max_wait_seconds: float = 0.002,
        max_concurrent_batches: int = 1,
        executor: Executor | None = None,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        if max_batch_size < 1 or max_concurrent_batches < 1 or max_wait_seconds < 0:
            raise ValueError("max_batch_size and max_concurrent_batches must be >= 1, max_wait_seconds >= 0")
        self.infer = infer
        self.max_batch_size = max_batch_size
        self.max_wait_seconds = max_wait_seconds
        self.max_concurrent_batches = max_concurrent_batches
        self.executor = executor
        self.on_batch = on_batch  # told the rows of every inference call (a metric, say)
        self._pending: deque[_Request] = deque()
        self._running: set[asyncio.Task[None]] = set()
        self._arrived: asyncio.Event | None = None
        self._slots: asyncio.Semaphore | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._stopping = False

    async def start(self) -> None:
        """Create the loop-bound objects and the dispatcher (in the app's lifespan, not per request)."""
        self._arrived = asyncio.Event()
        self._slots = asyncio.Semaphore(self.max_concurrent_batches)
        self._stopping = False
        self._dispatcher = asyncio.create_task(self._dispatch(), name="batcher")

    async def stop(self) -> None:
        """Answer everything queued and running, then stop; later submissions raise BatcherStopped."""
        dispatcher, self._dispatcher = self._dispatcher, None
        if dispatcher is None or self._arrived is None:
            return
        self._stopping = True
        self._arrived.set()  # wake the dispatcher: it drains the queue, then returns
        await dispatcher
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (a Prometheus gauge reads it)."""
        return len(self._pending)

    async def submit(self, inputs: Tensors) -> Tensors:
        """Infer on one request's rows (first axis of every input); returns its own rows of every output."""
        if self._dispatcher is None or self._arrived is None or self._stopping:
            raise BatcherStopped("the batcher is not running")
        assert self._slots is not None
        answer: asyncio.Future[Tensors] = asyncio.get_running_loop().create_future()
        request = _Request(inputs, len(next(iter(inputs.values()))), answer)
        if not self._pending and not self._slots.locked():
            # An idle model: run this request now, in the caller's task, without waking the dispatcher.
            await self._slots.acquire()  # free, so this does not wait
            await self._run([request])
            return await answer
        self._pending.append(request)
        self._arrived.set()
        return await answer

    async def _dispatch(self) -> None:
        assert self._arrived is not None
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        while True:
            while not self._pending:
                if self._stopping:
                    return
                self._arrived.clear()
                await self._arrived.wait()
            await self._slots.acquire()  # while every slot is busy, requests pile up: that is the batching
            first = self._pending.popleft()
            batch, rows = [first], first.rows
            deadline = loop.time() + self.max_wait_seconds
            while rows < self.max_batch_size:
                if not self._pending:
                    if not self._running or loop.time() >= deadline:
                        break  # an idle model answers now rather than wait for company
                    self._arrived.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(deadline - loop.time()):
                            await self._arrived.wait()
                    if not self._pending:
                        break
                if rows + self._pending[0].rows > self.max_batch_size:
                    break
                request = self._pending.popleft()
                batch.append(request)
                rows += request.rows
            task = asyncio.create_task(self._run(batch), name="batch")
            self._running.add(task)
            task.add_done_callback(self._running.discard)

    async def _run(self, batch: list[_Request]) -> None:
        assert self._slots is not None
        loop = asyncio.get_running_loop()
        try:
            if self.on_batch is not None:
                self.on_batch(sum(request.rows for request in batch))
            if len(batch) == 1:
                await self._answer_alone(batch[0], loop)
                return
            merged = {name: np.concatenate([r.inputs[name] for r in batch]) for name in batch[0].inputs}
            try:
                outputs = await loop.run_in_executor(self.executor, self.infer, merged)
            except Exception:  # one request may be at fault: give each its own call
                for request in batch:
                    await self._answer_alone(request, loop)
                return
            start = 0
            for request in batch:
                end = start + request.rows
                _settle(request, result={name: value[start:end] for name, value in outputs.items()})
                start = end
        finally:
            self._slots.release()

    async def _answer_alone(self, request: _Request, loop: asyncio.AbstractEventLoop) -> None:
        try:
            outputs = await loop.run_in_executor(self.executor, self.infer, request.inputs)
        except Exception as error:
            _settle(request, error=error)
        else:
            _settle(request, result=outputs)


def _settle(request: _Request, *, result: Tensors | None = None, error: Exception | None = None) -> None:
    """Answer a request unless its caller has gone (a cancelled HTTP request)."""
    if request.answer.done():
        return
    if error is not None:
        request.answer.set_exception(error)
    else:
        assert result is not None
        request.answer.set_result(result)
