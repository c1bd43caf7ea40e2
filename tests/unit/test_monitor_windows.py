"""Windows keep per-feature state of a fixed size, bin values on the profile's edges, and tumble by count
and by time."""

from __future__ import annotations

import tracemalloc
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from services.monitor.reference import CategoricalReference, NumericReference, Reference
from services.monitor.windows import (
    CategoricalFeatureWindow,
    NumericFeatureWindow,
    Reservoir,
    TumblingWindows,
    WindowSettings,
    period_end,
)
from shared.events import PredictionLogged
from tests.monitor_data import FEATURES, columns_of, profile_of, traffic

NOON = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)


@pytest.fixture(scope="module")
def reference() -> Reference:
    return Reference.from_profile(profile_of(traffic(2000, seed=1)))


def numeric(reference: Reference, name: str) -> NumericReference:
    feature = reference.features[name]
    assert isinstance(feature, NumericReference)
    return feature


def categorical(reference: Reference, name: str) -> CategoricalReference:
    feature = reference.features[name]
    assert isinstance(feature, CategoricalReference)
    return feature


def test_values_fall_in_the_profiles_bins_or_the_open_ended_outer_ones(reference: Reference) -> None:
    income = numeric(reference, "income")
    edges = income.edges
    window = NumericFeatureWindow(income, WindowSettings(), np.random.default_rng(0))
    window.add(np.array([edges[0] - 1, edges[0], edges[1], edges[-1], edges[-1] + 1, np.nan]))

    expected = np.zeros(edges.size + 1, dtype=int)
    expected[[0, 1, 2, -2, -1]] = 1  # below, the first bin, the second (its left edge), the last, above
    assert window.bin_counts.tolist() == expected.tolist()
    assert (window.rows, window.missing, window.out_of_range) == (6, 1, 2)


def test_the_profiles_own_histogram_is_reproduced_on_the_training_data(reference: Reference) -> None:
    training = traffic(2000, seed=1)
    for name in ("income", "skewed"):
        window = NumericFeatureWindow(numeric(reference, name), WindowSettings(), np.random.default_rng(0))
        window.add(training[name].to_numpy())
        assert window.bin_counts.tolist() == numeric(reference, name).bin_counts.tolist()


def test_a_constant_feature_has_one_bin_between_the_outer_ones() -> None:
    frame = traffic(200, seed=1).assign(income=5.0)
    income = numeric(Reference.from_profile(profile_of(frame)), "income")
    window = NumericFeatureWindow(income, WindowSettings(), np.random.default_rng(0))
    window.add(np.array([4.0, 5.0, 5.0, 6.0]))
    assert window.bin_counts.tolist() == [1, 2, 1]


def test_the_reservoir_keeps_everything_until_full_then_a_uniform_sample() -> None:
    reservoir = Reservoir(1000, np.random.default_rng(0))
    reservoir.add(np.arange(600, dtype=float))
    assert reservoir.values.tolist() == list(range(600))
    for start in range(600, 100_000, 7_000):
        reservoir.add(np.arange(start, min(start + 7_000, 100_000), dtype=float))
    assert reservoir.seen == 100_000
    assert reservoir.values.size == 1000
    assert np.unique(reservoir.values).size == 1000
    # Uniform over the stream: each tenth of it holds about a tenth of the sample.
    per_tenth = np.bincount((reservoir.values // 10_000).astype(int), minlength=10)
    assert per_tenth.min() > 60
    assert per_tenth.max() < 140


def test_categories_are_counted_and_new_ones_kept_up_to_the_limit(reference: Reference) -> None:
    region = categorical(reference, "region")
    window = CategoricalFeatureWindow(region, WindowSettings(max_new_categories=2), "missing")
    window.add(
        ["north", "north", "south", None, "", "missing", float("nan"), "mars", "venus", "pluto", "mars"]
    )

    assert window.missing == 4
    assert dict(zip(region.categories, window.counts.tolist(), strict=True))["north"] == 2
    assert dict(window.new_categories) == {"mars": 2, "venus": 1}
    assert (window.other_new, window.unseen) == (1, 4)


def test_windows_close_at_max_rows_even_within_one_batch(reference: Reference) -> None:
    windows = TumblingWindows("credit-risk", 3, reference, WindowSettings(max_rows=400, max_seconds=None))
    closed = windows.add(columns_of(traffic(1000, seed=2)), {"label": np.zeros(1000)}, NOON)

    assert [window.rows for window in closed] == [400, 400]
    assert windows.current is not None
    assert windows.current.rows == 200
    assert all(window.features["income"].rows == 400 for window in closed)
    assert closed[0].prediction is not None
    assert closed[0].prediction.rows == 400


def test_windows_close_when_their_period_ends(reference: Reference) -> None:
    windows = TumblingWindows("credit-risk", 3, reference, WindowSettings(max_rows=None, max_seconds=600))
    batch = columns_of(traffic(10, seed=2))
    assert windows.add(batch, {}, NOON + timedelta(seconds=30)) == []
    assert windows.close_if_due(NOON + timedelta(seconds=599)) is None

    closed = windows.add(batch, {}, NOON + timedelta(seconds=601))
    assert len(closed) == 1
    assert (closed[0].opened_at, closed[0].closed_at, closed[0].rows) == (
        NOON + timedelta(seconds=30),
        NOON + timedelta(seconds=600),
        10,
    )
    assert windows.close_if_due(NOON + timedelta(seconds=1200)) is not None


def test_periods_are_aligned_to_the_epoch() -> None:
    assert period_end(NOON + timedelta(minutes=7), 3600) == NOON + timedelta(hours=1)


def test_settings_need_a_way_to_close_a_window() -> None:
    with pytest.raises(ValueError, match="never closes"):
        WindowSettings(max_rows=None, max_seconds=None)


def test_a_prediction_logged_event_streams_in_with_features_as_columns_or_rows(reference: Reference) -> None:
    frame = traffic(3, seed=2)
    request = {"request_id": "r1", "rows": 3, "latency_ms": 1.0, "timestamp": NOON}
    as_rows = [[row[name] for name in FEATURES] for row in frame.to_dict("records")]
    for features in (frame.to_dict("list"), as_rows):
        event = PredictionLogged(
            model="credit-risk",
            version=3,
            requests=[request],
            features=features,
            outputs={"label": [0, 1, 1]},
        )
        windows = TumblingWindows("credit-risk", 3, reference, WindowSettings())
        assert windows.add_event(event) == []
        window = windows.current
        assert window is not None
        assert window.rows == 3
        assert window.last_row_at == NOON
        assert window.features["region"].present == 3
        assert window.features["income"].present == 3


def test_a_regressors_one_value_rows_are_read_as_values() -> None:
    frame = traffic(500, seed=1)
    profile = profile_of(frame)
    values = frame["income"].to_numpy() / 1000
    profile["task"] = "regression"
    profile["output_distribution"] = profile["features"]["income"] | {
        "histogram": {
            "bin_edges": np.quantile(values, np.linspace(0, 1, 11)).tolist(),
            "counts": [50] * 10,
        }
    }
    windows = TumblingWindows("m", 1, Reference.from_profile(profile), WindowSettings())
    windows.add(columns_of(frame.head(4)), {"variable": [[1.0], [2.0], [3.0], [None]]}, NOON)
    assert windows.current is not None
    assert windows.current.prediction is not None
    assert (windows.current.prediction.rows, windows.current.prediction.missing) == (4, 1)


def test_state_size_does_not_grow_with_the_traffic(reference: Reference) -> None:
    def state_after(rows: int) -> tuple[int, int]:
        windows = TumblingWindows("m", 1, reference, WindowSettings(max_rows=None, sample_size=2000))
        chunk = traffic(10_000, seed=5)
        categories = {name: chunk[name].tolist() for name in ("region", "owns_home")}
        numbers = {name: chunk[name].to_numpy() for name in ("income", "age", "skewed")}
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        for _ in range(rows // 10_000):
            windows.add(numbers | categories, {"label": np.zeros(10_000, dtype=int)}, NOON)
        held = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        assert windows.current is not None
        return windows.current.nbytes(), held

    small_state, small_held = state_after(20_000)
    large_state, large_held = state_after(1_000_000)
    assert small_state == large_state < 100_000
    assert large_held < small_held + 20_000
