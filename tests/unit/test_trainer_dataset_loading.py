"""Training tables load from CSV and Parquet by their name's suffix, and unreadable ones say why."""

from __future__ import annotations

import gzip
import hashlib
import io

import pandas as pd
import pytest

from services.trainer.dataset import DatasetError, fingerprint, load_table
from tests.trainer_data import credit_risk_frame


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return credit_risk_frame(rows=50)


def csv_bytes(frame: pd.DataFrame) -> bytes:
    text: str = frame.to_csv(index=False)
    return text.encode()


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def assert_same_table(loaded: pd.DataFrame, frame: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(loaded, frame, check_dtype=False, check_exact=False)


@pytest.mark.parametrize("uri", ["s3://flywheel/datasets/credit.csv", "file:///data/CREDIT.CSV"])
def test_csv_loads(frame: pd.DataFrame, uri: str) -> None:
    assert_same_table(load_table(csv_bytes(frame), uri), frame)


def test_gzipped_csv_loads(frame: pd.DataFrame) -> None:
    assert_same_table(load_table(gzip.compress(csv_bytes(frame)), "s3://flywheel/credit.csv.gz"), frame)


@pytest.mark.parametrize("uri", ["s3://flywheel/datasets/credit.parquet", "s3://flywheel/datasets/credit.pq"])
def test_parquet_loads(frame: pd.DataFrame, uri: str) -> None:
    assert_same_table(load_table(parquet_bytes(frame), uri), frame)


def test_missing_values_survive_loading(frame: pd.DataFrame) -> None:
    loaded = load_table(csv_bytes(frame), "credit.csv")

    assert loaded["region"].isna().sum() == frame["region"].isna().sum() > 0


def test_an_unknown_suffix_names_the_suffixes_that_work(frame: pd.DataFrame) -> None:
    with pytest.raises(DatasetError, match=r"credit\.xlsx.*\.csv, \.csv\.gz, \.parquet, \.pq"):
        load_table(csv_bytes(frame), "s3://flywheel/credit.xlsx")


@pytest.mark.parametrize(
    ("data", "uri"),
    [(b"", "credit.csv"), (b"\xff\xfe\x00\x81garbage", "credit.csv"), (b"not gzip", "credit.csv.gz")],
)
def test_unreadable_csv_says_which_file_and_why(data: bytes, uri: str) -> None:
    with pytest.raises(DatasetError, match=rf"^could not read {uri} as CSV: .+"):
        load_table(data, uri)


def test_unreadable_parquet_says_which_file_and_why(frame: pd.DataFrame) -> None:
    with pytest.raises(DatasetError, match=r"^could not read credit\.parquet as Parquet: .+"):
        load_table(csv_bytes(frame), "credit.parquet")


def test_the_fingerprint_is_the_sha256_of_the_bytes() -> None:
    assert fingerprint(b"income,age\n1,2\n") == hashlib.sha256(b"income,age\n1,2\n").hexdigest()
