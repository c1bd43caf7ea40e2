"""The benchmarks' measure of what a wake-up costs on their machine (printed beside their figures)."""

from __future__ import annotations

import os

from bench.common.machine import wake_up_cost


def test_wake_up_cost_is_measured_across_cores_and_on_one_and_leaves_the_affinity_alone() -> None:
    allowed = os.sched_getaffinity(0)

    cost = wake_up_cost(round_trips=200)

    assert os.sched_getaffinity(0) == allowed
    if len(allowed) < 2:
        assert cost is None  # nothing to wake across
        return
    assert cost is not None
    assert cost.across_cores_us > 0
    assert cost.same_core_us > 0
    assert "across cores" in cost.text()
