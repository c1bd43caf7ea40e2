"""Tumbling windows of a model version's traffic, kept per feature in memory that does not grow with it.

Rows stream in as columns (a `PredictionLogged` event's, or any arrays); each feature keeps only:

- numeric: counts on the reference profile's bins plus an open-ended bin on each side (values outside
  the training range), a uniform reservoir sample of `sample_size` values (for Kolmogorov-Smirnov and
  Wasserstein), and, for features whose reference holds few distinct values, the count of each value;
- categorical: the count of each reference category, of at most `max_new_categories` categories the
  reference never had, and of the values of any further new ones together;
- both: rows and missing values.

A window closes when it holds `max_rows` rows or when its period of `max_seconds` (aligned to the epoch,
so windows of every version share boundaries) ends; `drift.evaluate` turns a closed window into a report.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any, Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.monitor.reference import (
    MAX_DISCRETE_VALUES,
    OTHER_CATEGORY,
    CategoricalReference,
    FeatureReference,
    NumericReference,
    Reference,
    bin_indices,
)
from shared.events import PredictionLogged

# The trainer's models name their outputs so (skl2onnx): the predicted class, or the predicted value.
CLASSIFICATION_OUTPUT = "label"
REGRESSION_OUTPUT = "variable"

Column = np.ndarray | Sequence[Any]


class WindowSettings(BaseModel):
    """How a model's windows are cut and how much each feature keeps."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_rows: int | None = Field(default=10_000, ge=1, description="close a window at this many rows")
    max_seconds: float | None = Field(
        default=3600.0, gt=0, description="close a window when its period (aligned to the epoch) ends"
    )
    sample_size: int = Field(
        default=5_000,
        ge=100,
        le=100_000,
        description="values kept per numeric feature for KS and Wasserstein",
    )
    max_new_categories: int = Field(
        default=50,
        ge=0,
        description="categories the reference never had, counted one by one; the rest together",
    )
    prediction_output: str | None = Field(
        default=None,
        description='the output holding the prediction; default "label", or "variable" for regressors',
    )

    @model_validator(mode="after")
    def _windows_end(self) -> Self:
        if self.max_rows is None and self.max_seconds is None:
            raise ValueError("a window needs max_rows, max_seconds or both, or it never closes")
        return self


class Reservoir:
    """A uniform random sample of at most `capacity` of the values seen (algorithm R, one chunk at a time)."""

    def __init__(self, capacity: int, rng: np.random.Generator) -> None:
        self.capacity = capacity
        self.seen = 0
        self._values = np.empty(capacity, dtype=np.float64)
        self._rng = rng

    @property
    def values(self) -> np.ndarray:
        return self._values[: min(self.seen, self.capacity)]

    def add(self, values: np.ndarray) -> None:
        filling = min(max(self.capacity - self.seen, 0), values.size)
        self._values[self.seen : self.seen + filling] = values[:filling]
        rest = values[filling:]
        if rest.size:
            # The value at (0-based) position t of the stream replaces a uniform slot in [0, t] if that slot
            # is inside the sample; when a chunk sends two values to one slot, the later one stays.
            positions = np.arange(self.seen + filling, self.seen + values.size)
            slots = self._rng.integers(0, positions + 1)
            taken = slots < self.capacity
            slots, kept = slots[taken][::-1], rest[taken][::-1]
            unique_slots, last = np.unique(slots, return_index=True)
            self._values[unique_slots] = kept[last]
        self.seen += values.size

    def nbytes(self) -> int:
        return self._values.nbytes


class NumericFeatureWindow:
    """One numeric feature (or a regressor's output) over one window."""

    kind = "numeric"

    def __init__(
        self, reference: NumericReference, settings: WindowSettings, rng: np.random.Generator
    ) -> None:
        self.reference = reference
        self.rows = 0
        self.missing = 0
        self.bin_counts = np.zeros(reference.edges.size + 1 if reference.edges.size else 0, dtype=np.int64)
        self.sample = Reservoir(settings.sample_size, rng)
        # Counts per value while the feature looks discrete (as its reference does); None once it does not.
        self.value_counts: Counter[float] | None = (
            Counter() if reference.discrete_values is not None else None
        )

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def out_of_range(self) -> int:
        """Values below the training minimum or above its maximum."""
        return int(self.bin_counts[0] + self.bin_counts[-1]) if self.bin_counts.size else 0

    def add(self, column: Column) -> None:
        values = _as_floats(column)
        present = values[~np.isnan(values)]
        self.rows += values.size
        self.missing += values.size - present.size
        if present.size == 0:
            return
        edges = self.reference.edges
        if edges.size:
            self.bin_counts += np.bincount(bin_indices(edges, present), minlength=self.bin_counts.size)
        self.sample.add(present)
        if self.value_counts is not None:
            distinct, counts = np.unique(present, return_counts=True)
            self.value_counts.update(dict(zip(distinct.tolist(), counts.tolist(), strict=True)))
            if len(self.value_counts) > MAX_DISCRETE_VALUES:
                self.value_counts = None

    def nbytes(self) -> int:
        tracked = 0 if self.value_counts is None else len(self.value_counts) * _COUNTER_ENTRY_BYTES
        return self.bin_counts.nbytes + self.sample.nbytes() + tracked


class CategoricalFeatureWindow:
    """One categorical feature (or a classifier's predicted class) over one window."""

    kind = "categorical"

    def __init__(
        self, reference: CategoricalReference, settings: WindowSettings, missing_category: str
    ) -> None:
        self.reference = reference
        self.rows = 0
        self.missing = 0
        self.counts = np.zeros(len(reference.categories), dtype=np.int64)
        self.new_categories: Counter[str] = Counter()
        self.other_new = 0  # values of new categories beyond `max_new_categories`
        self._index = {category: i for i, category in enumerate(reference.categories)}
        self._other = self._index.get(OTHER_CATEGORY)
        self._max_new = settings.max_new_categories
        self._missing_values = {None, "", missing_category}

    @property
    def present(self) -> int:
        return self.rows - self.missing

    @property
    def unseen(self) -> int:
        """Values of categories the reference never had."""
        return sum(self.new_categories.values()) + self.other_new

    def add(self, column: Column) -> None:
        values = column.tolist() if isinstance(column, np.ndarray) else column
        self.rows += len(values)
        for value, count in Counter(values).items():
            if value in self._missing_values or (isinstance(value, float) and math.isnan(value)):
                self.missing += count
                continue
            category = str(value)
            index = self._index.get(category)
            if index is not None:
                self.counts[index] += count
            elif self._other is not None:
                # The profile lumped its rarer categories together: an unlisted name may be one of them.
                self.counts[self._other] += count
            elif category in self.new_categories or len(self.new_categories) < self._max_new:
                self.new_categories[category] += count
            else:
                self.other_new += count

    def nbytes(self) -> int:
        return self.counts.nbytes + len(self.new_categories) * _COUNTER_ENTRY_BYTES


FeatureWindow = NumericFeatureWindow | CategoricalFeatureWindow

# What one tracked value or category costs in a Counter, about: the dict entry, the key and the count.
_COUNTER_ENTRY_BYTES = 200


class Window:
    """One tumbling window of one model version: every feature's state and the prediction's."""

    def __init__(
        self,
        model: str,
        version: int,
        reference: Reference,
        settings: WindowSettings,
        opened_at: datetime,
        rng: np.random.Generator,
    ) -> None:
        self.model = model
        self.version = version
        self.reference = reference
        self.opened_at = opened_at
        self.closed_at: datetime | None = None
        self.last_row_at = opened_at
        self.rows = 0
        self.features: dict[str, FeatureWindow] = {
            name: _feature_window(feature, settings, reference.missing_category, rng)
            for name, feature in reference.features.items()
        }
        self.prediction = (
            None
            if reference.output is None
            else _feature_window(reference.output, settings, reference.missing_category, rng)
        )
        self.prediction_output = settings.prediction_output or (
            CLASSIFICATION_OUTPUT if reference.task == "classification" else REGRESSION_OUTPUT
        )

    def add(
        self, features: Mapping[str, Column], outputs: Mapping[str, Column], rows: int, at: datetime
    ) -> None:
        """Add `rows` rows: a column per feature (a feature without one counts as missing) and per output."""
        for name, window in self.features.items():
            column = features.get(name)
            window.add(column if column is not None else [None] * rows)
        prediction = outputs.get(self.prediction_output)
        if self.prediction is not None and prediction is not None:
            self.prediction.add(_flat(prediction))
        self.rows += rows
        self.last_row_at = max(self.last_row_at, at)

    def nbytes(self) -> int:
        """The state's size: fixed by the reference and the settings, whatever the traffic."""
        windows = [*self.features.values(), *([self.prediction] if self.prediction is not None else [])]
        return sum(window.nbytes() for window in windows)


class TumblingWindows:
    """The open window of one model version, closed and replaced as rows arrive and time passes."""

    def __init__(
        self, model: str, version: int, reference: Reference, settings: WindowSettings, seed: int = 0
    ) -> None:
        self.model = model
        self.version = version
        self.reference = reference
        self.settings = settings
        self.current: Window | None = None
        self._rng = np.random.default_rng(seed)

    def add(
        self, features: Mapping[str, Column], outputs: Mapping[str, Column], at: datetime
    ) -> list[Window]:
        """Stream in rows (one column per feature and per output, all of one length) that arrived at `at`;
        returns the windows that closed: one whose period ended before `at`, and each that filled up."""
        rows = _row_count(features, outputs)
        closed = [window for window in [self.close_if_due(at)] if window is not None]
        start = 0
        while start < rows:
            window = self._open(at)
            room = rows - start if self.settings.max_rows is None else self.settings.max_rows - window.rows
            stop = min(rows, start + room)
            window.add(_slice(features, start, stop), _slice(outputs, start, stop), stop - start, at)
            start = stop
            if self.settings.max_rows is not None and window.rows >= self.settings.max_rows:
                closed.append(self._close(at))
        return closed

    def add_event(self, event: PredictionLogged, at: datetime | None = None) -> list[Window]:
        """`add` for a `prediction-logged` event; `at` defaults to its last request's timestamp."""
        names = list(self.reference.features)
        when = at or max(request.timestamp for request in event.requests)
        return self.add(feature_columns(event, names), event.outputs, when)

    def close_if_due(self, now: datetime) -> Window | None:
        """Close the open window if its period has ended by `now` (call it on a timer too, so quiet
        models still report)."""
        if self.current is None or self.settings.max_seconds is None:
            return None
        if now < period_end(self.current.opened_at, self.settings.max_seconds):
            return None
        return self._close(now)

    def close(self, now: datetime) -> Window | None:
        """Close the open window whatever it holds (a version retired, the service stopping)."""
        return None if self.current is None else self._close(now)

    def _open(self, at: datetime) -> Window:
        if self.current is None:
            self.current = Window(self.model, self.version, self.reference, self.settings, at, self._rng)
        return self.current

    def _close(self, now: datetime) -> Window:
        window = self.current
        assert window is not None
        window.closed_at = now
        if self.settings.max_seconds is not None:
            window.closed_at = min(now, period_end(window.opened_at, self.settings.max_seconds))
        self.current = None
        return window


def period_end(opened_at: datetime, seconds: float) -> datetime:
    """The end of the `seconds`-long period, counted from the Unix epoch, that `opened_at` falls in."""
    epoch = datetime(1970, 1, 1, tzinfo=opened_at.tzinfo)
    elapsed = (opened_at - epoch).total_seconds()
    return epoch + timedelta(seconds=(math.floor(elapsed / seconds) + 1) * seconds)


def feature_columns(event: PredictionLogged, names: Sequence[str]) -> dict[str, list[Any]]:
    """An event's features as named columns; features sent as rows are named by position, in the
    order of `names` (the model's inputs, as the profile lists them)."""
    if isinstance(event.features, dict):
        return event.features
    columns = list(zip(*event.features, strict=True)) if event.features else []
    return {name: list(column) for name, column in zip(names, columns, strict=False)}


def _feature_window(
    reference: FeatureReference, settings: WindowSettings, missing_category: str, rng: np.random.Generator
) -> FeatureWindow:
    if isinstance(reference, NumericReference):
        return NumericFeatureWindow(reference, settings, rng)
    return CategoricalFeatureWindow(reference, settings, missing_category)


def _as_floats(column: Column) -> np.ndarray:
    """Numbers as float64, missing (None, NaN) and anything that is not a number as NaN."""
    try:
        return np.asarray(column, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return np.array([_as_float(value) for value in column], dtype=np.float64)


def _as_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _flat(column: Column) -> Column:
    """An output column of one-element rows ([[v], [v], ...], as a regressor's) as plain values."""
    if isinstance(column, np.ndarray):
        return column.reshape(len(column), -1)[:, 0] if column.ndim > 1 else column
    return [value[0] if isinstance(value, list) and value else value for value in column]


def _row_count(features: Mapping[str, Column], outputs: Mapping[str, Column]) -> int:
    lengths = {len(column) for column in [*features.values(), *outputs.values()]}
    if len(lengths) > 1:
        raise ValueError(
            f"columns of different lengths: {sorted(lengths)}; every column needs a value per row"
        )
    return lengths.pop() if lengths else 0


def _slice(columns: Mapping[str, Column], start: int, stop: int) -> dict[str, Column]:
    return {name: column[start:stop] for name, column in columns.items()}
