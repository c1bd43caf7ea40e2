"""The records under test: scoring requests for the serving benchmark's models (same training data, same
seed, same ONNX conversion), and a result-sized message for the loops that score nothing.

Request `n` is keyed `entity-<n>` and carries row `n mod 10,000` of the fixed-seed synthetic data (20
features, six decimals, as a producer would write them) in the envelope form
`{"features": [...], "model": "<name>"}`.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import orjson

from bench.serving.workload import REQUEST_DECIMALS, load_rows

# The serving benchmark holds out this many rows and trains on the rest: the same model here.
HELD_OUT_ROWS = 100
RESULT_HEADERS_TIME = b"2026-01-01T00:00:00+00:00"


class RequestPool:
    """Distinct feature rows, cycled over the request stream (every key is unique, rows repeat)."""

    def __init__(self) -> None:
        self.rows = load_rows()
        self._features = [
            orjson.dumps([round(float(value), REQUEST_DECIMALS) for value in row]) for row in self.rows
        ]

    def __len__(self) -> int:
        return len(self.rows)

    def row_of(self, record: int) -> int:
        return record % len(self.rows)

    def batch(self, size: int) -> np.ndarray:
        """`size` rows in request order (from record 0), for the in-process ceiling."""
        return self.rows[np.arange(size) % len(self.rows)]

    def records(self, count: int, model: str) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) of the first `count` requests for `model`."""
        prefix = b'{"features":'
        suffix = b',"model":' + orjson.dumps(model) + b"}"
        for record in range(count):
            yield entity_key(record), prefix + self._features[self.row_of(record)] + suffix


def entity_key(record: int) -> bytes:
    return b"entity-%d" % record


def result_sized_value(model: str, request_topic: str) -> bytes:
    """A message of the size and shape of the batch service's result for a two-class model, for the
    loops that produce one per record without scoring."""
    return orjson.dumps(
        {
            "key": "entity-123456",
            "request_id": f"{request_topic}-0-123456",
            "model": model,
            "version": 1,
            "outputs": {"label": 1, "probabilities": [0.12345678901234568, 0.8765432109876543]},
            "source": {"topic": request_topic, "partition": 0, "offset": 123456},
        }
    )


def result_headers(request_topic: str) -> list[tuple[str, bytes]]:
    """The six CloudEvents binary-mode headers the service writes on every result."""
    return [
        ("ce_specversion", b"1.0"),
        ("ce_id", f"{request_topic}-0-123456".encode()),
        ("ce_source", b"/flywheel/batch"),
        ("ce_type", b"io.flywheel.scoring.result.v1"),
        ("ce_time", RESULT_HEADERS_TIME),
        ("content-type", b"application/json"),
    ]
