"""File jobs' table work without a service: files read in fixed chunks (the same chunks from any row a job
goes on from), columns mapped to a model's inputs by the rules, cells that are not numbers kept for the
row's rejection, and predictions written after the input columns, CSV text exactly as it came."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import pytest

from services.batch.file_jobs import (
    OutputLayout,
    ParquetAssembly,
    TableError,
    encode_part,
    feature_arrays,
    feature_columns,
    file_format,
    fixed_chunks,
    open_table,
    predictions_key,
    sample_rows,
)
from services.batch.scoring import ScoredRows
from shared.events import ModelSignature, TensorSpec

MATRIX = ModelSignature(
    inputs=[TensorSpec(name="X", datatype="FP32", shape=[-1, 2])],
    outputs=[
        TensorSpec(name="label", datatype="INT64", shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 2]),
    ],
)
PER_COLUMN = ModelSignature(
    inputs=[
        TensorSpec(name="income", datatype="FP32", shape=[-1, 1]),
        TensorSpec(name="region", datatype="BYTES", shape=[-1, 1]),
    ],
    outputs=[TensorSpec(name="label", datatype="BYTES", shape=[-1])],
)


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_formats_and_default_output_names() -> None:
    assert [file_format(name) for name in ("a.csv", "b.PARQUET", "c.pq", "d.json")] == [
        "csv",
        "parquet",
        "parquet",
        None,
    ]
    assert predictions_key("batch/in/customers.csv") == "batch/in/customers.predictions.csv"
    assert predictions_key("data/x.y.parquet") == "data/x.y.predictions.parquet"


@pytest.mark.parametrize("skip_chunks", [0, 1, 3])
def test_parquet_chunks_are_the_same_from_any_chunk_a_job_goes_on_from(
    tmp_path: Path, skip_chunks: int
) -> None:
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({"n": np.arange(1000)}), path, row_group_size=130)
    table = open_table(path, "parquet")
    assert table.total_rows == 1000
    chunks = list(fixed_chunks(table.batches(skip_chunks * 300), 300, table.schema))
    expected = [list(range(start, min(start + 300, 1000))) for start in range(skip_chunks * 300, 1000, 300)]
    assert [chunk.column("n").to_pylist() for chunk in chunks] == expected
    assert table.fraction_read() == 1.0


def test_csv_is_read_as_text_in_fixed_chunks_and_numeric_columns_inferred(tmp_path: Path) -> None:
    rows = "\n".join(f"{index},00{index},x{index}" for index in range(25))
    table = open_table(write_csv(tmp_path / "in.csv", f"a,zip,b\n{rows}\n"), "csv")
    assert (table.columns, table.numeric_columns, table.total_rows) == (["a", "zip", "b"], ["a", "zip"], None)
    chunks = list(fixed_chunks(table.batches(10), 10, table.schema))
    assert [chunk.num_rows for chunk in chunks] == [10, 5]
    assert chunks[0].column("zip").to_pylist()[:2] == ["0010", "0011"]  # text as it came
    assert table.fraction_read() == 1.0


def test_an_empty_file_is_one_empty_chunk(tmp_path: Path) -> None:
    table = open_table(write_csv(tmp_path / "in.csv", "a,b\n"), "csv")
    chunks = list(fixed_chunks(table.batches(0), 10, table.schema))
    assert [chunk.num_rows for chunk in chunks] == [0]
    assert chunks[0].column_names == ["a", "b"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("in.csv", "a,a\n1,2\n", "must be unique; repeated: 'a'"),
        ("in.csv", "", "cannot be read as CSV"),
        ("in.parquet", "not parquet", "cannot be read as Parquet"),
    ],
)
def test_unreadable_files_are_refused_saying_why(
    tmp_path: Path, name: str, content: str, message: str
) -> None:
    path = write_csv(tmp_path / name, content)
    with pytest.raises(TableError, match=message):
        open_table(path, "parquet" if name.endswith(".parquet") else "csv")


def test_a_malformed_csv_line_fails_naming_it(tmp_path: Path) -> None:
    with pytest.raises(TableError, match=r"cannot be read as CSV: .*Expected 2 columns, got 3: 3,4,5"):
        open_table(write_csv(tmp_path / "in.csv", "a,b\n1,2\n3,4,5\n"), "csv")
    rows = "\n".join(f"{index},{index}" for index in range(1_000_000))
    path = write_csv(tmp_path / "in.csv", f"a,b\n{rows}\n3,4,5\n")
    table = open_table(path, "csv")  # the first block reads
    with pytest.raises(TableError, match=r"cannot be read as CSV: .*Expected 2 columns, got 3: 3,4,5"):
        list(fixed_chunks(table.batches(0), 100_000, table.schema))


def test_a_model_with_an_input_per_feature_takes_columns_by_name(tmp_path: Path) -> None:
    table = open_table(write_csv(tmp_path / "in.csv", "id,region,income\n1,north,5\n"), "csv")
    assert feature_columns(PER_COLUMN, table, None) == (["income", "region"], None)
    missing = open_table(write_csv(tmp_path / "other.csv", "id,income\n1,5\n"), "csv")
    with pytest.raises(
        TableError, match="no column 'region' for the model's inputs; its columns are 'id', 'income'"
    ):
        feature_columns(PER_COLUMN, missing, None)


def test_a_single_input_takes_the_listed_columns_else_the_first_numeric_ones(tmp_path: Path) -> None:
    table = open_table(write_csv(tmp_path / "in.csv", "name,a,b,c\nx,1,2.5,3\n"), "csv")
    assert feature_columns(MATRIX, table, None) == (["a", "b"], ["a", "b"])
    assert feature_columns(MATRIX, table, ["c", "a"]) == (["c", "a"], ["c", "a"])
    with pytest.raises(TableError, match="no column 'd' for the job's features"):
        feature_columns(MATRIX, table, ["a", "d"])
    narrow = open_table(write_csv(tmp_path / "narrow.csv", "name,a\nx,1\n"), "csv")
    with pytest.raises(TableError, match=r"takes 2 features, but the file has 1 numeric column\(s\) \(a\)"):
        feature_columns(MATRIX, narrow, None)


def test_cells_that_are_not_numbers_are_kept_as_they_are_for_the_rejection() -> None:
    chunk = pa.table(
        {
            "text": pa.array(["1.5", "abc", "", " 2", "NaN"]),
            "numbers": pa.array([1, None, 3, 4, 5]),
            "region": pa.array(["n", "s", None, "e", "w"]),
        }
    )
    arrays = feature_arrays(chunk, {"text": "FP32", "numbers": "FP64", "region": "BYTES"})
    assert arrays["text"][[0, 1, 2, 3]].tolist() == [1.5, "abc", "", 2.0]
    assert np.isnan(arrays["text"][4])
    assert arrays["numbers"].tolist() == [1, None, 3, 4, 5]
    assert arrays["region"].tolist() == ["n", "s", None, "e", "w"]
    clean = feature_arrays(pa.table({"a": pa.array(["1", "2"])}), {"a": "FP32"})
    assert clean["a"].dtype == np.float64


def test_predictions_follow_the_input_columns_and_rejected_rows_say_why() -> None:
    chunk = pa.table({"id": pa.array(["7", "8", "9"]), "label": pa.array(["yes", "no", "yes"])})
    scored = ScoredRows(
        scored=[0, 2],
        inputs={},
        outputs={
            "label": np.array([1, 0], dtype=np.int64),
            "probabilities": np.array([[0.25, 0.75], [0.5, 0.5]], dtype=np.float32),
        },
        rejected={1: "feature 'a' is \"x\"; the model expects FP32 numbers"},
    )
    layout = OutputLayout(MATRIX, chunk.column_names)
    table = layout.table(chunk, scored, version=3)
    assert table.column_names == [
        "id",
        "label",
        "predicted_label",
        "probabilities_0",
        "probabilities_1",
        "model_version",
        "_error",
    ]
    assert table.column("predicted_label").to_pylist() == [1, None, 0]
    assert table.column("probabilities_1").to_pylist() == [0.75, None, 0.5]
    assert table.column("model_version").to_pylist() == [3, 3, 3]
    assert table.column("_error").to_pylist() == [
        None,
        "feature 'a' is \"x\"; the model expects FP32 numbers",
        None,
    ]
    text = encode_part(table, "csv", header=True).decode()
    assert text.splitlines() == [
        "id,label,predicted_label,probabilities_0,probabilities_1,model_version,_error",
        "7,yes,1,0.25,0.75,3,",
        '8,no,,,,3,"feature \'a\' is ""x""; the model expects FP32 numbers"',
        "9,yes,0,0.5,0.5,3,",
    ]
    assert not encode_part(table, "csv", header=False).decode().startswith("id,")


def test_a_chunk_with_every_row_rejected_still_has_every_column() -> None:
    chunk = pa.table({"a": pa.array([1.0, 2.0])})
    scored = ScoredRows([], {}, {}, {0: "bad", 1: "worse"})
    table = OutputLayout(MATRIX, ["a"]).table(chunk, scored, version=1)
    assert table.schema.field("probabilities_0").type == pa.float32()
    assert table.column("label").to_pylist() == [None, None]
    assert table.column("_error").to_pylist() == ["bad", "worse"]


def test_string_outputs_and_parquet_parts_join_into_one_file(tmp_path: Path) -> None:
    layout = OutputLayout(PER_COLUMN, ["income", "region"])
    parts = []
    for start in (0, 2):
        chunk = pa.table({"income": pa.array([1.0, 2.0]), "region": pa.array(["n", "s"])})
        scored = ScoredRows([0, 1], {}, {"label": np.array(["yes", "no"], dtype=object)}, {})
        parts.append(
            encode_part(layout.table(chunk, scored, version=start + 1), "parquet", header=start == 0)
        )
    assembly = ParquetAssembly(tmp_path / "out.parquet")
    for part in parts:
        assembly.append(part)
    assembly.close()
    joined = pq.read_table(tmp_path / "out.parquet")
    assert joined.column("label").to_pylist() == ["yes", "no", "yes", "no"]
    assert joined.column("model_version").to_pylist() == [1, 1, 3, 3]
    assert pq.ParquetFile(tmp_path / "out.parquet").metadata.num_row_groups == 2
    assert pacsv.read_csv(io.BytesIO(encode_part(joined, "csv", header=True))).num_rows == 4


def test_the_sample_is_drawn_at_the_rate_and_the_same_each_time() -> None:
    first = sample_rows(seed=11, chunk_index=2, scored=10_000, rate=0.05)
    assert 350 < len(first) < 650
    assert np.array_equal(first, sample_rows(seed=11, chunk_index=2, scored=10_000, rate=0.05))
    assert not np.array_equal(first, sample_rows(seed=11, chunk_index=3, scored=10_000, rate=0.05))
    assert len(sample_rows(seed=11, chunk_index=2, scored=10, rate=0)) == 0
    assert sample_rows(seed=11, chunk_index=2, scored=3, rate=1).tolist() == [0, 1, 2]
