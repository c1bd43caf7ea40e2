"""Rows' json and jsonb values read exactly as json.loads reads them, though orjson reads most of them."""

from __future__ import annotations

import json
import random

import pytest

from shared.db import _json_value

EDGES = [
    "{}",
    '{"p0": "rf", "auc": 0.9, "n": 3, "none": null, "ok": true}',
    '"text"',
    "[1e308, -0.0, 5e-324, 0.1]",
    '{"k": "\\u00e9\\ud83d\\ude00"}',
    "12345678901234567890123",  # beyond 64 bits: orjson would read a float
    "-9223372036854775809",
    '{"a": {"b": [1, 2, 99999999999999999999999]}}',
    "[18446744073709551615, 9223372036854775807]",
    "[1e400]",  # beyond float: orjson refuses it
    "[12345678901234567890.5, 1e19]",
]


@pytest.mark.parametrize("text", EDGES)
def test_a_value_reads_as_json_loads_reads_it(text: str) -> None:
    value = _json_value(text)
    assert repr(value) == repr(json.loads(text))


def test_random_documents_read_as_json_loads_reads_them() -> None:
    generator = random.Random(7)
    for _ in range(2000):
        document = {
            "float": generator.random() * 10 ** generator.randint(-30, 30),
            "integer": generator.randint(-(2**70), 2**70),
            "nested": [
                generator.randint(-(10**25), 10**25),
                {"whole": float(generator.randint(-(2**80), 2**80))},
            ],
        }
        text = json.dumps(document)
        assert repr(_json_value(text)) == repr(json.loads(text))
