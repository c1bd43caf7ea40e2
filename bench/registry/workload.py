"""The runs both servers log: identical params and metric points, drawn from a fixed seed."""

from __future__ import annotations

import random
from dataclasses import dataclass

PARAMS_PER_RUN = 10
METRIC_KEYS = ("auc", "loss", "accuracy", "precision", "recall", "f1", "log_loss", "rmse", "mae", "r2")
STEPS_PER_METRIC = 10
VALUES_PER_RUN = PARAMS_PER_RUN + len(METRIC_KEYS) * STEPS_PER_METRIC  # 110
SEARCH_FILTER = "metrics.auc > 0.8 and params.p0 = 'rf'"
SEARCH_ORDER_BY = ("metrics.auc DESC",)
SEARCH_MAX_RESULTS = 100


@dataclass(frozen=True)
class MetricPoint:
    key: str
    step: int
    value: float


@dataclass(frozen=True)
class RunData:
    """One run's 10 params (p0 alternates 'rf' and 'lr') and 100 metric points (10 keys x 10 steps);
    the last step of `auc` is uniform in [0.5, 1.0), which is what the search filters and sorts on."""

    params: dict[str, str]
    metrics: tuple[MetricPoint, ...]

    @property
    def final_auc(self) -> float:
        return next(p.value for p in reversed(self.metrics) if p.key == "auc")


def make_runs(count: int, seed: int) -> list[RunData]:
    """`count` runs, the same for the same seed."""
    generator = random.Random(seed)
    return [_make_run(index, generator) for index in range(count)]


def _make_run(index: int, generator: random.Random) -> RunData:
    params = {"p0": "rf" if index % 2 == 0 else "lr"}
    params |= {f"p{number}": str(generator.randint(1, 1000)) for number in range(1, PARAMS_PER_RUN)}
    points: list[MetricPoint] = []
    for key in METRIC_KEYS:
        final_value = generator.uniform(0.5, 1.0)
        for step in range(STEPS_PER_METRIC):
            # Earlier steps climb towards the final value, so only the last step decides the search.
            value = (
                final_value if step == STEPS_PER_METRIC - 1 else final_value * (step + 1) / STEPS_PER_METRIC
            )
            points.append(MetricPoint(key, step, value))
    return RunData(params=params, metrics=tuple(points))


def expected_search_hits(runs: list[RunData]) -> list[float]:
    """The auc values the search should return, in order: what both servers must agree with."""
    matching = [run.final_auc for run in runs if run.params["p0"] == "rf" and run.final_auc > 0.8]
    return sorted(matching, reverse=True)[:SEARCH_MAX_RESULTS]
