"""Training tables: reading them, checking they can be trained on, and shaping their feature columns.

`prepare_features` is the one place that decides how feature values reach a model, so training,
the ONNX parity check and the reference profile all see the same values:

- numeric features become float64; a missing value stays NaN (the pipeline imputes the median,
  in scikit-learn and in the ONNX graph alike, which feeds float32);
- categorical features become Python strings; a missing value (None, NaN or "") becomes the
  category "missing". ONNX string tensors cannot hold NaN, so a serving client must send "missing"
  (or "") for a missing category; the graph maps "" to "missing" itself.
"""

from __future__ import annotations

import hashlib
import io
import math
import zlib

import numpy as np
import pandas as pd
import pyarrow

from services.trainer.spec import TrainingSpec

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
MISSING_CATEGORY = "missing"
MIN_ROWS = 10
MIN_ROWS_PER_CLASS = 2


class DatasetError(ValueError):
    """The bytes cannot be read as a table; the message names the file and what went wrong."""


def load_table(data: bytes, uri: str) -> pd.DataFrame:
    """Read CSV (`.csv`, `.csv.gz`) or Parquet (`.parquet`, `.pq`) bytes, by `uri`'s suffix."""
    name = uri.lower()
    if name.endswith(CSV_SUFFIXES):
        try:
            return pd.read_csv(io.BytesIO(data), compression="gzip" if name.endswith(".gz") else None)
        except (ValueError, OSError, EOFError, zlib.error) as error:
            raise DatasetError(f"could not read {uri} as CSV: {error}") from error
    if name.endswith(PARQUET_SUFFIXES):
        try:
            return pd.read_parquet(io.BytesIO(data))
        except (ValueError, OSError, pyarrow.ArrowException) as error:
            raise DatasetError(f"could not read {uri} as Parquet: {error}") from error
    raise DatasetError(
        f"cannot tell the format of {uri}: its name must end in one of "
        f"{', '.join(CSV_SUFFIXES + PARQUET_SUFFIXES)}"
    )


def fingerprint(data: bytes) -> str:
    """The dataset's identity for lineage: the SHA-256 of its bytes, in hex."""
    return hashlib.sha256(data).hexdigest()


def feature_columns_of(frame: pd.DataFrame, spec: TrainingSpec) -> list[str]:
    """The spec's feature columns, or by default every column of `frame` except the target."""
    if spec.feature_columns is not None:
        return list(spec.feature_columns)
    return [str(column) for column in frame.columns if column != spec.target]


def categorical_columns_of(frame: pd.DataFrame, spec: TrainingSpec) -> list[str]:
    """The spec's categorical columns, or by default the feature columns whose type is not numeric."""
    if spec.categorical_columns is not None:
        return list(spec.categorical_columns)
    return [
        column
        for column in feature_columns_of(frame, spec)
        if column in frame.columns and not pd.api.types.is_numeric_dtype(frame[column])
    ]


def prepare_features(frame: pd.DataFrame, spec: TrainingSpec) -> pd.DataFrame:
    """The feature columns as every model input sees them (see the module docstring); idempotent."""
    categorical = set(categorical_columns_of(frame, spec))
    return pd.DataFrame(
        {
            column: prepare_column(frame[column], column in categorical)
            for column in feature_columns_of(frame, spec)
        },
        index=frame.index,
    )


def prepare_column(column: pd.Series, categorical: bool) -> pd.Series:
    """One feature column as models see it: float64 with NaN, or strings with "missing"."""
    if not categorical:
        return pd.Series(column.to_numpy(dtype="float64", na_value=np.nan), index=column.index)
    missing = column.isna().to_numpy() | (column.astype(object) == "").to_numpy()
    values = [
        MISSING_CATEGORY if absent else str(value) for value, absent in zip(column, missing, strict=True)
    ]
    return pd.Series(values, index=column.index, dtype=object)


def validate_for_training(frame: pd.DataFrame, spec: TrainingSpec) -> list[str]:
    """Every reason `frame` cannot train `spec`'s model, each a sentence; an empty list means it can."""
    if frame.empty:
        return ["the dataset has no rows"]
    problems: list[str] = []
    if len(frame) < MIN_ROWS:
        problems.append(f"the dataset has {len(frame)} rows; at least {MIN_ROWS} are needed")
    features = feature_columns_of(frame, spec)
    present = [column for column in features if column in frame.columns]
    absent = [column for column in features if column not in frame.columns]
    if absent:
        problems.append(f"feature columns missing from the dataset: {_listing(absent)}")
    if not features:
        problems.append(f"there are no feature columns: the dataset has only the target {spec.target!r}")
    if spec.target in frame.columns:
        problems += _target_problems(frame[spec.target], spec)
    else:
        problems.append(
            f"target column {spec.target!r} is not in the dataset; "
            f"its columns: {_listing(list(frame.columns))}"
        )
    empty = [column for column in present if frame[column].isna().all()]
    if empty:
        problems.append(f"feature columns with no values at all: {_listing(empty)}")
    categorical = set(categorical_columns_of(frame, spec))
    not_numeric = [
        column
        for column in present
        if column not in categorical and not pd.api.types.is_numeric_dtype(frame[column])
    ]
    if not_numeric:
        problems.append(
            f"feature columns that are not numeric but not listed as categorical: {_listing(not_numeric)}"
        )
    return problems


def _target_problems(target: pd.Series, spec: TrainingSpec) -> list[str]:
    problems: list[str] = []
    missing = int(target.isna().sum())
    if missing:
        problems.append(f"the target {spec.target!r} is missing in {missing} rows")
    if spec.task == "regression":
        if not pd.api.types.is_numeric_dtype(target):
            problems.append(
                f"the target {spec.target!r} must be numeric for regression; it is {target.dtype}"
            )
        return problems
    counts = target.dropna().value_counts()
    if len(counts) < 2:
        problems.append(
            f"the target {spec.target!r} has {len(counts)} class(es); classification needs at least 2"
        )
    # Stratification then puts at least one row of every class in the holdout, so every class is evaluated.
    needed = max(MIN_ROWS_PER_CLASS, math.ceil(1 / spec.holdout_fraction))
    rare = [f"{label!r} ({count})" for label, count in counts.items() if count < needed]
    if rare:
        problems.append(
            f"classes with fewer than {needed} rows (needed for a holdout of {spec.holdout_fraction}): "
            f"{_listing(rare, quote=False)}"
        )
    return problems


def _listing(items: list[str], quote: bool = True, limit: int = 20) -> str:
    shown = [repr(item) if quote else item for item in items[:limit]]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(shown) + more
