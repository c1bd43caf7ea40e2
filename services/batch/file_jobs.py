"""The table side of file jobs: a CSV or Parquet file read in chunks of a fixed number of rows, with
memory bounded by the chunk (and, for Parquet, the row group), each chunk's feature columns handed to
the model, and its predictions written as one part of the output file.

Columns map to the model's inputs by one rule. A model with one [-1, 1] input per feature takes the
file's columns of those names (other columns are carried into the output but not fed). A model with a
single [-1, n] input takes the columns the job's `features` list, else the file's first n numeric
columns in file order. CSV cells are read as text, so that a bad value fails its row rather than the
file, and so that the input columns are written back exactly as they came.

Every output row is its input row, then one column per model output (an output of shape [-1, k] gives
k columns `<name>_0` ... `<name>_<k-1>`), then `model_version`, then `_error`: why the row could not be
scored (its outputs are then empty). An output column whose name an input column already has is
prefixed with `predicted_`.
"""

from __future__ import annotations

import io
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.ipc as ipc
import pyarrow.parquet as pq

from services.batch.scoring import ScoredRows, takes_feature_inputs
from shared.events import ModelSignature, TensorSpec

FileFormat = Literal["csv", "parquet"]
SUFFIXES: dict[str, FileFormat] = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
CONTENT_TYPES: dict[FileFormat, str] = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}
PART_SUFFIXES: dict[FileFormat, str] = {"csv": "csv", "parquet": "arrows"}  # Arrow IPC streams
PREDICTIONS_SUFFIX = ".predictions"
ERROR_COLUMN = "_error"
VERSION_COLUMN = "model_version"
COLLISION_PREFIX = "predicted_"

CSV_BLOCK_BYTES = 1024 * 1024  # the reader reads some 30 blocks ahead: this bounds its memory
PARQUET_BATCH_ROWS = 65_536
_CSV_STRUCTURAL = r'[,"\r\n]'
_STRUCTURAL_BYTES = np.isin(np.arange(256), [ord(mark) for mark in ',"\r\n'])
_ARROW_TYPES: dict[str, pa.DataType] = {
    "BOOL": pa.bool_(),
    "UINT8": pa.uint8(),
    "UINT16": pa.uint16(),
    "UINT32": pa.uint32(),
    "UINT64": pa.uint64(),
    "INT8": pa.int8(),
    "INT16": pa.int16(),
    "INT32": pa.int32(),
    "INT64": pa.int64(),
    "FP16": pa.float16(),
    "FP32": pa.float32(),
    "FP64": pa.float64(),
    "BYTES": pa.string(),
}


class TableError(ValueError):
    """The file cannot be read as its format, or its columns do not fit the model; says which."""


def file_format(key: str) -> FileFormat | None:
    """The format a key's suffix names (.csv, .parquet, .pq), None for any other."""
    return next((fmt for suffix, fmt in SUFFIXES.items() if key.lower().endswith(suffix)), None)


def predictions_key(input_key: str) -> str:
    """Where a job writes its predictions by default: next to the input, `<stem>.predictions.<ext>`."""
    stem, dot, extension = input_key.rpartition(".")
    return f"{stem}{PREDICTIONS_SUFFIX}{dot}{extension}"


class InputTable(Protocol):
    """An input file opened for reading: its columns, which of them are numeric, and its rows in batches."""

    columns: list[str]
    numeric_columns: list[str]
    schema: pa.Schema  # of the batches it yields
    total_rows: int | None  # known up front for Parquet; CSV is counted as it is read

    def batches(self, skip_rows: int) -> Iterator[pa.RecordBatch]: ...

    def fraction_read(self) -> float: ...

    def close(self) -> None: ...


def open_table(path: Path, fmt: FileFormat) -> InputTable:
    """Open a downloaded input file; TableError when it is not a readable file of that format."""
    return CsvTable(path) if fmt == "csv" else ParquetTable(path)


class CsvTable:
    """A CSV file with a header row, read as text in blocks. Numeric columns are those pyarrow infers as
    numbers from the first block."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.size = path.stat().st_size
        try:
            probe = pacsv.open_csv(path, read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES))
        except (pa.ArrowInvalid, pa.ArrowTypeError) as error:
            raise TableError(f"the file cannot be read as CSV: {error}") from error
        schema = probe.schema
        probe.close()
        self.columns = _unique_names(schema.names)
        self.numeric_columns = [field.name for field in schema if _is_numeric(field.type)]
        self.schema = pa.schema([(name, pa.string()) for name in self.columns])
        self.total_rows: int | None = None
        self._file: pa.NativeFile | None = None

    def batches(self, skip_rows: int) -> Iterator[pa.RecordBatch]:
        self._file = pa.OSFile(str(self.path))
        reader = pacsv.open_csv(
            self._file,
            read_options=pacsv.ReadOptions(block_size=CSV_BLOCK_BYTES),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in self.columns}, quoted_strings_can_be_null=False
            ),
        )
        yield from _skipped(_read_csv(reader), skip_rows)

    def fraction_read(self) -> float:
        if self._file is None or self._file.closed or not self.size:
            return 0.0
        return min(int(self._file.tell()) / self.size, 1.0)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _read_csv(reader: pacsv.CSVStreamingReader) -> Iterator[pa.RecordBatch]:
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except pa.ArrowInvalid as error:
            raise TableError(f"the file cannot be read as CSV: {error}") from error
        yield batch


class ParquetTable:
    def __init__(self, path: Path) -> None:
        try:
            # Buffered column reads: pages come in as batches are decoded, not whole column chunks.
            self.file = pq.ParquetFile(path, buffer_size=8 * 1024 * 1024, pre_buffer=False)
        except (pa.ArrowInvalid, OSError) as error:
            raise TableError(f"the file cannot be read as Parquet: {error}") from error
        self.schema = self.file.schema_arrow
        self.columns = _unique_names(self.schema.names)
        self.numeric_columns = [field.name for field in self.schema if _is_numeric(field.type)]
        self.total_rows: int | None = self.file.metadata.num_rows
        self._read = 0

    def batches(self, skip_rows: int) -> Iterator[pa.RecordBatch]:
        metadata = self.file.metadata
        first_group, first_row = 0, 0
        while (
            first_group < metadata.num_row_groups
            and first_row + metadata.row_group(first_group).num_rows <= skip_rows
        ):
            first_row += metadata.row_group(first_group).num_rows
            first_group += 1
        self._read = min(skip_rows, metadata.num_rows)
        groups = list(range(first_group, metadata.num_row_groups))
        batches = self.file.iter_batches(batch_size=PARQUET_BATCH_ROWS, row_groups=groups) if groups else []
        for batch in _skipped(batches, skip_rows - first_row):
            self._read = min(self._read + batch.num_rows, metadata.num_rows)
            yield batch

    def fraction_read(self) -> float:
        return self._read / self.total_rows if self.total_rows else 1.0

    def close(self) -> None:
        self.file.close()


def _skipped(batches: Iterable[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The batches without their first `rows` rows."""
    for batch in batches:
        if rows >= batch.num_rows:
            rows -= batch.num_rows
            continue
        yield batch.slice(rows) if rows else batch
        rows = 0


def fixed_chunks(batches: Iterable[pa.RecordBatch], rows: int, schema: pa.Schema) -> Iterator[pa.Table]:
    """The batches regrouped into tables of exactly `rows` rows (the last one shorter), so that chunk i
    always holds the same rows, however the reader happened to cut its batches; at least one chunk,
    empty for an empty file."""
    pending: list[pa.RecordBatch] = []
    count = 0
    produced = False
    for batch in batches:
        while batch.num_rows:
            take = min(rows - count, batch.num_rows)
            pending.append(batch.slice(0, take))
            count += take
            batch = batch.slice(take)
            if count == rows:
                yield pa.Table.from_batches(pending)
                produced = True
                pending, count = [], 0
    if count or not produced:
        yield pa.Table.from_batches(pending) if pending else schema.empty_table()


def _unique_names(names: list[str]) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise TableError(
            f"the file's column names must be unique; repeated: {', '.join(map(repr, repeated))}"
        )
    return list(names)


def _is_numeric(kind: pa.DataType) -> bool:
    return bool(pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_decimal(kind))


# ---------------------------------------------------------------- columns -> model inputs


def feature_columns(
    signature: ModelSignature, table: InputTable, requested: list[str] | None
) -> tuple[list[str], list[str] | None]:
    """Which columns feed the model, and the `features` list for `score_columns` (None for a model with
    an input per feature, which takes its columns by name). TableError names what is missing."""
    if takes_feature_inputs(signature):
        names = [spec.name for spec in signature.inputs]
        _require_columns(names, table, "the model's inputs")
        return names, None
    spec = signature.inputs[0]
    if requested:
        _require_columns(requested, table, "the job's features")
        return list(requested), list(requested)
    width = spec.shape[1]
    if width == -1:
        raise TableError(
            f"the model's input {spec.name!r} takes any number of features; name its columns with `features`"
        )
    if len(table.numeric_columns) < width:
        raise TableError(
            f"the model's input {spec.name!r} takes {width} features, but the file has "
            f"{len(table.numeric_columns)} numeric column(s) ({', '.join(table.numeric_columns) or 'none'}); "
            "name the columns with `features`"
        )
    chosen = table.numeric_columns[:width]
    return chosen, chosen


def _require_columns(names: list[str], table: InputTable, what: str) -> None:
    missing = [name for name in names if name not in table.columns]
    if missing:
        raise TableError(
            f"the file has no column {', '.join(map(repr, missing))} for {what}; "
            f"its columns are {', '.join(map(repr, table.columns))}"
        )


def feature_arrays(chunk: pa.Table, datatypes: dict[str, str]) -> dict[str, np.ndarray]:
    """The chunk's feature columns (named in `datatypes`, with the datatype of the input they feed) as
    arrays `score_columns` takes: numbers as numbers, and each value that cannot be read as the input's
    datatype kept as it is (None for an empty cell), so that its row is rejected saying what it was."""
    return {name: _feature_array(chunk.column(name), datatype) for name, datatype in datatypes.items()}


def _feature_array(column: pa.ChunkedArray, datatype: str) -> np.ndarray:
    if datatype == "BYTES":
        if not pa.types.is_string(column.type) and not pa.types.is_large_string(column.type):
            column = pc.cast(column, pa.string())
        return np.asarray(column.to_numpy(zero_copy_only=False))
    target = pa.bool_() if datatype == "BOOL" else pa.float64()
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        try:
            column = pc.cast(column, target)
        except pa.ArrowInvalid:  # some cells are not numbers (or booleans): find which, keep their text
            return _parsed_text(column, datatype)
    elif pa.types.is_decimal(column.type):
        column = pc.cast(column, pa.float64())
    values = np.asarray(column.to_numpy(zero_copy_only=False))
    if column.null_count:
        values = values.astype(object)
        values[column.is_null().to_numpy(zero_copy_only=False)] = None
    return values


def _parsed_text(column: pa.ChunkedArray, datatype: str) -> np.ndarray:
    text = np.asarray(column.to_numpy(zero_copy_only=False))
    if datatype == "BOOL":
        words = {"true": True, "false": False, "1": True, "0": False}
        return np.array(
            [words.get(value.strip().lower(), value) if value else value for value in text], object
        )
    numbers = np.asarray(pd.to_numeric(pd.Series(text), errors="coerce"), dtype=np.float64)
    values = numbers.astype(object)
    unread = np.flatnonzero(np.isnan(numbers))
    for row in unread:  # a NaN that the text did not spell is a cell that is not a number
        if not _spells_nan(text[row]):
            values[row] = text[row]
    return values


def _spells_nan(value: str | None) -> bool:
    return value is not None and value.strip().lower().lstrip("+-") == "nan"


# ---------------------------------------------------------------- predictions -> output


class OutputLayout:
    """The output's columns after the input's: one or more per model output, `model_version`, `_error`."""

    def __init__(self, signature: ModelSignature, input_columns: list[str]) -> None:
        taken = set(input_columns)

        def unique(name: str) -> str:
            return f"{COLLISION_PREFIX}{name}" if name in taken else name

        self.outputs: list[tuple[TensorSpec, list[str]]] = []
        for spec in signature.outputs:
            width = _element_columns(spec)
            names = [spec.name] if width is None or width == 1 else [f"{spec.name}_{i}" for i in range(width)]
            self.outputs.append((spec, [unique(name) for name in names]))
        self.version_column = unique(VERSION_COLUMN)
        self.error_column = unique(ERROR_COLUMN)

    @property
    def output_columns(self) -> list[str]:
        return [name for _, names in self.outputs for name in names] + [
            self.version_column,
            self.error_column,
        ]

    def table(self, chunk: pa.Table, scored: ScoredRows, version: int) -> pa.Table:
        """The chunk with its predictions: rejected rows have empty outputs and the reason in `_error`."""
        rows = chunk.num_rows
        positions = np.asarray(scored.scored, dtype=np.int64)
        missing = np.ones(rows, dtype=np.bool_)
        missing[positions] = False
        columns = dict(zip(chunk.column_names, chunk.columns, strict=True))
        for spec, names in self.outputs:
            values = scored.outputs.get(spec.name)
            if _element_columns(spec) is None:  # no fixed width: each row's value as JSON text
                text = np.full(rows, None, dtype=object)
                if values is not None:
                    text[positions] = [
                        orjson.dumps(row, option=orjson.OPT_SERIALIZE_NUMPY).decode() for row in values
                    ]
                columns[names[0]] = pa.array(text, pa.string())
                continue
            for index, name in enumerate(names):
                column = None if values is None else values.reshape(len(positions), -1)[:, index]
                columns[name] = _spread(column, positions, missing, _ARROW_TYPES[spec.datatype])
        columns[self.version_column] = pa.array(np.full(rows, version, dtype=np.int64))
        errors = np.full(rows, None, dtype=object)
        for row, reason in scored.rejected.items():
            errors[row] = reason
        columns[self.error_column] = pa.array(errors, pa.string())
        return pa.table(columns)


def _element_columns(spec: TensorSpec) -> int | None:
    """How many columns an output takes: 1 for [-1] or [-1, 1], k for [-1, k]; None when unknown."""
    if len(spec.shape) == 1:
        return 1
    if len(spec.shape) == 2 and spec.shape[1] > 0:
        return spec.shape[1]
    return None


def _spread(
    values: np.ndarray | None, positions: np.ndarray, missing: np.ndarray, kind: pa.DataType
) -> pa.Array:
    """The scored rows' values at their positions in the chunk, null elsewhere."""
    if values is None:
        return pa.nulls(len(missing), kind)
    if kind == pa.string():
        spread = np.full(len(missing), None, dtype=object)
        spread[positions] = [value.decode() if isinstance(value, bytes) else value for value in values]
        return pa.array(spread, kind)
    spread = np.zeros(len(missing), dtype=values.dtype)
    spread[positions] = values
    return pa.array(spread, kind, mask=missing)


def encode_part(table: pa.Table, fmt: FileFormat, *, header: bool) -> bytes:
    """One chunk of the output file: CSV text (the header only in the first part); for Parquet, an Arrow
    IPC stream (cheap to write and read back) that `ParquetAssembly` encodes once, into the final file."""
    if fmt == "csv":
        return encode_csv(table, header=header)
    sink = io.BytesIO()
    with ipc.new_stream(sink, table.schema, options=ipc.IpcWriteOptions(compression="lz4")) as writer:
        writer.write_table(table)
    return sink.getvalue()


def encode_csv(table: pa.Table, *, header: bool) -> bytes:
    """The table as CSV lines, each cell quoted only when it holds a comma, a quote or a line break (as
    Python's csv module writes), empty for null; built column by column in Arrow's compute kernels.
    (pyarrow's own writer quotes every text cell.)"""
    text = [(",".join(_quoted_name(name) for name in table.column_names) + "\n").encode()] if header else []
    for batch in table.to_batches():  # its columns share their rows: joined without copying them first
        if not batch.num_rows:
            continue
        cells = [_csv_cells(column) for column in batch.columns]
        rows = pc.binary_join_element_wise(*cells, ",") if len(cells) > 1 else cells[0]
        # Every row with its line break, taken from the array's data buffer at once.
        lines = pc.binary_join_element_wise(rows, "", "\n")
        offsets = np.frombuffer(lines.buffers()[1], dtype=np.int32)
        start, end = int(offsets[lines.offset]), int(offsets[lines.offset + len(lines)])
        text.append(lines.buffers()[2].slice(start, end - start).to_pybytes())
    return b"".join(text)


def _csv_cells(column: pa.Array) -> pa.Array:
    if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        text = column
    elif _element_text(column.type):
        text = pc.cast(column, pa.string())
    else:  # lists and other nested values: JSON
        text = pa.array(
            [None if value is None else orjson.dumps(value).decode() for value in column.to_pylist()]
        )
    if _holds_structural(text):  # the cells that need them get quotes (a rare, slower path)
        needs_quotes = pc.match_substring_regex(text, _CSV_STRUCTURAL)
        quoted = pc.binary_join_element_wise('"', pc.replace_substring(text, '"', '""'), '"', "")
        text = pc.if_else(needs_quotes, quoted, text)
    return pc.fill_null(text, "")


def _holds_structural(text: pa.Array) -> bool:
    """Whether any cell of a text column holds a comma, a quote or a line break: one scan of its bytes."""
    data = text.buffers()[2]
    if data is None:
        return False
    offsets = np.frombuffer(
        text.buffers()[1], dtype=np.int64 if pa.types.is_large_string(text.type) else np.int32
    )
    start, end = int(offsets[text.offset]), int(offsets[text.offset + len(text)])
    return bool(_STRUCTURAL_BYTES[np.frombuffer(data, dtype=np.uint8)[start:end]].any())


def _element_text(kind: pa.DataType) -> bool:
    return bool(
        pa.types.is_integer(kind)
        or pa.types.is_floating(kind)
        or pa.types.is_boolean(kind)
        or pa.types.is_decimal(kind)
        or pa.types.is_temporal(kind)
        or pa.types.is_null(kind)
    )


def _quoted_name(name: str) -> str:
    if not any(mark in name for mark in ',"\r\n'):
        return name
    return '"' + name.replace('"', '""') + '"'


class ParquetAssembly:
    """Parts (see `encode_part`) appended one by one into one Parquet file at `path`, a row group per
    part (blocking). Only text columns are dictionary-encoded: on numbers it costs more than it saves."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._writer: pq.ParquetWriter | None = None

    def append(self, part: bytes) -> None:
        table = ipc.open_stream(part).read_all()
        if self._writer is None:
            text = [field.name for field in table.schema if pa.types.is_string(field.type)]
            self._writer = pq.ParquetWriter(self.path, table.schema, use_dictionary=text or False)
        self._writer.write_table(table, row_group_size=max(table.num_rows, 1))

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def sample_rows(seed: int, chunk_index: int, scored: int, rate: float) -> np.ndarray:
    """Which of a chunk's `scored` rows (positions among them) are reported to prediction-logged: drawn at
    `rate` from the job's seed and the chunk's index, so that a chunk scored again reports the same rows."""
    if rate <= 0 or not scored:
        return np.empty(0, dtype=np.int64)
    if rate >= 1:
        return np.arange(scored)
    draws = np.random.default_rng([seed, chunk_index]).random(scored)
    return np.flatnonzero(draws < rate)


def job_seed(job_id: str) -> int:
    """A job's sampling seed, from its id."""
    return int.from_bytes(job_id.encode()[:16].ljust(16, b"\0"), "big") % (2**63)
