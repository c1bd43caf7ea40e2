"""Adaptive micro-batching: concurrent requests share inference calls, each gets its own rows back,
batches stay within their bound, a lone request does not wait, and a bad request fails alone."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from services.serving.batching import AdaptiveBatcher, BatcherStopped
from shared.tensors import Tensors


class DoublingModel:
    """Doubles its input; records the rows of every call; can be made slow to let a queue build up."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def __call__(self, inputs: Tensors) -> Tensors:
        features = inputs["x"]
        if np.isnan(features).any():
            raise ValueError("NaN in input")
        with self.lock:
            self.calls.append(len(features))
        threading.Event().wait(self.delay)
        return {"y": features * 2, "label": (features[:, 0] > 0).astype(np.int64)}


def rows(*values: float) -> Tensors:
    return {"x": np.array([[value, value] for value in values], dtype=np.float32)}


@pytest.fixture
def executor() -> Iterator[ThreadPoolExecutor]:
    with ThreadPoolExecutor(max_workers=2) as pool:
        yield pool


async def test_concurrent_requests_share_calls_and_each_gets_its_own_rows(
    executor: ThreadPoolExecutor,
) -> None:
    model = DoublingModel(delay=0.02)
    batcher = AdaptiveBatcher(model, max_batch_size=64, max_wait_seconds=0.005, executor=executor)
    await batcher.start()
    answers = await asyncio.gather(*(batcher.submit(rows(float(n), float(n) + 0.5)) for n in range(40)))
    await batcher.stop()
    for n, answer in enumerate(answers):
        np.testing.assert_array_equal(answer["y"], rows(float(n), float(n) + 0.5)["x"] * 2)
        assert answer["label"].shape == (2,)
    assert sum(model.calls) == 80
    assert len(model.calls) < 40 / 2, f"expected merged calls, got {model.calls}"


async def test_a_batch_never_exceeds_the_maximum_rows(executor: ThreadPoolExecutor) -> None:
    model = DoublingModel(delay=0.01)
    batcher = AdaptiveBatcher(model, max_batch_size=10, max_wait_seconds=0.01, executor=executor)
    await batcher.start()
    await asyncio.gather(*(batcher.submit(rows(1.0, 2.0, 3.0)) for _ in range(30)))
    await batcher.stop()
    assert max(model.calls) <= 10
    assert sum(model.calls) == 90


async def test_a_lone_request_on_an_idle_model_does_not_wait_for_company(
    executor: ThreadPoolExecutor,
) -> None:
    model = DoublingModel()
    batcher = AdaptiveBatcher(model, max_batch_size=64, max_wait_seconds=30.0, executor=executor)
    await batcher.start()
    async with asyncio.timeout(10):  # would take 30 s if it waited for max_wait_seconds
        answer = await batcher.submit(rows(1.0))
    await batcher.stop()
    np.testing.assert_array_equal(answer["y"], [[2.0, 2.0]])


async def test_a_bad_request_fails_alone_and_the_others_in_its_batch_succeed(
    executor: ThreadPoolExecutor,
) -> None:
    model = DoublingModel(delay=0.02)
    batcher = AdaptiveBatcher(model, max_batch_size=64, max_wait_seconds=0.005, executor=executor)
    await batcher.start()
    requests = [rows(float(n)) for n in range(12)]
    requests[5] = rows(float("nan"))
    answers = await asyncio.gather(*(batcher.submit(r) for r in requests), return_exceptions=True)
    await batcher.stop()
    assert isinstance(answers[5], ValueError)
    for n, answer in enumerate(answers):
        if n != 5:
            assert isinstance(answer, dict)
            np.testing.assert_array_equal(answer["y"], [[2.0 * n, 2.0 * n]])


async def test_stop_answers_what_was_queued_and_refuses_what_comes_later(
    executor: ThreadPoolExecutor,
) -> None:
    model = DoublingModel(delay=0.01)
    batcher = AdaptiveBatcher(model, max_batch_size=4, max_wait_seconds=0.001, executor=executor)
    await batcher.start()
    pending = [asyncio.ensure_future(batcher.submit(rows(float(n)))) for n in range(20)]
    await asyncio.sleep(0)
    await batcher.stop()
    assert all(task.done() and task.exception() is None for task in pending)
    with pytest.raises(BatcherStopped):
        await batcher.submit(rows(1.0))


async def test_two_concurrent_batch_slots_wait_briefly_to_fill_a_batch(executor: ThreadPoolExecutor) -> None:
    model = DoublingModel(delay=0.02)
    batcher = AdaptiveBatcher(
        model, max_batch_size=8, max_wait_seconds=0.01, max_concurrent_batches=2, executor=executor
    )
    await batcher.start()
    answers = await asyncio.gather(*(batcher.submit(rows(float(n))) for n in range(32)))
    await batcher.stop()
    assert len(answers) == 32
    assert sum(model.calls) == 32
    assert max(model.calls) <= 8


def test_invalid_bounds_are_refused() -> None:
    with pytest.raises(ValueError, match="max_batch_size"):
        AdaptiveBatcher(DoublingModel(), max_batch_size=0)
