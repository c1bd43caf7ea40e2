"""Traffic per model version and minute, for the dashboard: how many predictions, how fast they were
answered (a latency histogram) and how confident the model was (a histogram of each row's highest class
probability). Counted in memory and written when the minute is over, so memory holds only the minutes
still open whatever the traffic."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np

from shared.events import PredictionLogged

# Upper edges in milliseconds; the last bucket is everything slower.
LATENCY_EDGES_MS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, math.inf)
CONFIDENCE_EDGES = tuple(round(edge, 2) for edge in np.linspace(0.0, 1.0, 21))
PROBABILITIES_OUTPUT = "probabilities"


@dataclass
class MinuteTraffic:
    model: str
    version: int
    minute: datetime
    rows: int = 0
    latency_counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_EDGES_MS))
    confidence_counts: list[int] = field(default_factory=lambda: [0] * (len(CONFIDENCE_EDGES) - 1))


class TrafficCounter:
    def __init__(self) -> None:
        self._open: dict[tuple[str, int, datetime], MinuteTraffic] = {}

    def add(self, event: PredictionLogged) -> None:
        """Count an event's rows in the minute of its first request."""
        minute = event.requests[0].timestamp.astimezone(UTC).replace(second=0, microsecond=0)
        key = (event.model, event.version, minute)
        traffic = self._open.get(key) or self._open.setdefault(key, MinuteTraffic(*key))
        traffic.rows += event.rows
        for request in event.requests:
            bucket = next(i for i, edge in enumerate(LATENCY_EDGES_MS) if request.latency_ms <= edge)
            traffic.latency_counts[bucket] += request.rows
        probabilities = event.outputs.get(PROBABILITIES_OUTPUT)
        if probabilities:
            confidence = np.asarray(probabilities, dtype=np.float64).reshape(event.rows, -1).max(axis=1)
            counts, _ = np.histogram(confidence[np.isfinite(confidence)], bins=CONFIDENCE_EDGES)
            traffic.confidence_counts = [
                a + int(b) for a, b in zip(traffic.confidence_counts, counts, strict=True)
            ]

    def finished(self, now: datetime, *, everything: bool = False) -> list[MinuteTraffic]:
        """The minutes that are over (all of them with `everything`), taken out of memory."""
        current = now.astimezone(UTC).replace(second=0, microsecond=0)
        done = [key for key in self._open if everything or key[2] < current]
        return [self._open.pop(key) for key in done]


def percentile_ms(counts: list[int], share: float) -> float | None:
    """A latency percentile read off the histogram: the upper edge of the bucket it falls in (the last,
    open bucket reads as its lower edge)."""
    total = sum(counts)
    if total == 0:
        return None
    wanted = share * total
    seen = 0
    for index, count in enumerate(counts):
        seen += count
        if seen >= wanted:
            edge = LATENCY_EDGES_MS[index]
            return edge if math.isfinite(edge) else LATENCY_EDGES_MS[index - 1]
    return LATENCY_EDGES_MS[-2]
