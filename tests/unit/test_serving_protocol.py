"""Serving protocol: V2 and v1 request bodies become arrays checked against the model's signature,
errors say what was expected and what came, and outputs become response bodies."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import orjson
import pytest

from services.serving.protocol import (
    encode_v1_predictions,
    encode_v2_response,
    parse_v1_instances,
    parse_v2_request,
)
from shared.events import ModelSignature, TensorSpec
from shared.tensors import InvalidInput

CLASSIFIER_OUTPUTS = [
    TensorSpec(name="label", datatype="INT64", shape=[-1]),
    TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 2]),
]
PER_COLUMN = ModelSignature(
    inputs=[
        TensorSpec(name="income", datatype="FP32", shape=[-1, 1]),
        TensorSpec(name="age", datatype="FP32", shape=[-1, 1]),
        TensorSpec(name="debt_ratio", datatype="FP32", shape=[-1, 1]),
        TensorSpec(name="region", datatype="BYTES", shape=[-1, 1]),
    ],
    outputs=CLASSIFIER_OUTPUTS,
)
SINGLE_INPUT = ModelSignature(
    inputs=[TensorSpec(name="X", datatype="FP32", shape=[-1, 4])],
    outputs=CLASSIFIER_OUTPUTS,
)


def tensor(name: str, datatype: str, shape: list[int], data: list[Any]) -> dict[str, Any]:
    return {"name": name, "datatype": datatype, "shape": shape, "data": data}


def per_column_request(rows: int = 2, **replaced: dict[str, Any]) -> dict[str, Any]:
    inputs = {
        "income": tensor("income", "FP32", [rows, 1], [50_000.0 + row for row in range(rows)]),
        "age": tensor("age", "FP32", [rows, 1], [30 + row for row in range(rows)]),
        "debt_ratio": tensor("debt_ratio", "FP32", [rows, 1], [0.25] * rows),
        "region": tensor("region", "BYTES", [rows, 1], ["north", "south"][:rows]),
    }
    inputs.update(replaced)
    return {"inputs": list(inputs.values())}


def invalid(body: bytes | dict[str, Any], signature: ModelSignature = PER_COLUMN, **options: bool) -> str:
    with pytest.raises(InvalidInput) as error:
        parse_v2_request(body, signature, **options)
    return str(error.value)


def invalid_v1(body: bytes | dict[str, Any], signature: ModelSignature = PER_COLUMN, **options: bool) -> str:
    with pytest.raises(InvalidInput) as error:
        parse_v1_instances(body, signature, **options)
    return str(error.value)


# ---------------------------------------------------------------- V2 requests


def test_v2_request_with_several_rows_and_a_bytes_input_becomes_typed_arrays():
    body = per_column_request() | {"id": "req-1", "outputs": [{"name": "label"}]}

    inputs, meta = parse_v2_request(orjson.dumps(body), PER_COLUMN)

    assert inputs["income"].dtype == np.float32
    assert inputs["income"].shape == (2, 1)
    np.testing.assert_array_equal(inputs["age"], [[30.0], [31.0]])
    assert inputs["region"].dtype == object
    assert inputs["region"].tolist() == [["north"], ["south"]]
    assert meta.request_id == "req-1"
    assert meta.requested_outputs == ["label"]


def test_v2_request_accepts_flat_and_nested_data_alike():
    flat = {"inputs": [tensor("X", "FP32", [2, 4], [1, 2, 3, 4, 5, 6, 7, 8])]}
    nested = {"inputs": [tensor("X", "FP32", [2, 4], [[1, 2, 3, 4], [5, 6, 7, 8]])]}

    from_flat, _ = parse_v2_request(flat, SINGLE_INPUT)
    from_nested, _ = parse_v2_request(nested, SINGLE_INPUT)

    np.testing.assert_array_equal(from_flat["X"], np.arange(1, 9, dtype=np.float32).reshape(2, 4))
    np.testing.assert_array_equal(from_nested["X"], from_flat["X"])


def test_v2_request_without_id_or_outputs_has_empty_metadata():
    _, meta = parse_v2_request(per_column_request(), PER_COLUMN)

    assert meta.request_id is None
    assert meta.requested_outputs is None
    assert meta.parameters == {}


def test_v2_integer_input_takes_whole_numbers_and_rejects_fractions():
    signature = ModelSignature(inputs=[TensorSpec(name="n", datatype="INT64", shape=[-1])], outputs=[])

    inputs, _ = parse_v2_request({"inputs": [tensor("n", "INT64", [2], [3, 4.0])]}, signature)

    assert inputs["n"].dtype == np.int64
    assert inputs["n"].tolist() == [3, 4]
    assert invalid({"inputs": [tensor("n", "INT64", [2], [3, 4.5])]}, signature) == (
        "input 'n' row 1 is 4.5; the model expects INT64 integers"
    )


def test_v2_datatype_different_from_the_signature_is_rejected():
    body = per_column_request(income=tensor("income", "FP64", [2, 1], [1.0, 2.0]))

    assert invalid(body) == "input 'income' has datatype FP64; the model expects FP32"


def test_v2_missing_input_is_rejected_with_the_model_inputs():
    body = per_column_request()
    body["inputs"] = [entry for entry in body["inputs"] if entry["name"] != "region"]

    assert (
        invalid(body) == "input 'region' is missing; the model's inputs are income, age, debt_ratio, region"
    )


def test_v2_unknown_input_is_rejected():
    body = per_column_request(colour=tensor("colour", "BYTES", [2, 1], ["red", "blue"]))

    assert invalid(body).startswith("unknown input 'colour'")


def test_v2_input_sent_twice_is_rejected():
    body = per_column_request()
    body["inputs"].append(body["inputs"][0])

    assert invalid(body) == "input 'income' is sent more than once"


def test_v2_shape_that_does_not_fit_the_signature_is_rejected():
    body = {"inputs": [tensor("X", "FP32", [2, 3], [1, 2, 3, 4, 5, 6])]}

    assert invalid(body, SINGLE_INPUT) == "input 'X' has shape [2, 3]; the model expects [-1, 4]"


def test_v2_shape_of_another_rank_is_rejected():
    body = {"inputs": [tensor("X", "FP32", [8], [1, 2, 3, 4, 5, 6, 7, 8])]}

    assert invalid(body, SINGLE_INPUT) == "input 'X' has shape [8]; the model expects [-1, 4]"


def test_v2_data_length_must_match_the_shape():
    body = {"inputs": [tensor("X", "FP32", [2, 4], [1, 2, 3, 4, 5, 6, 7])]}

    assert invalid(body, SINGLE_INPUT) == "input 'X' shape [2, 4] needs 8 values, got 7"


def test_v2_inputs_with_different_row_counts_are_rejected():
    body = per_column_request(age=tensor("age", "FP32", [3, 1], [30, 31, 32]))

    assert invalid(body) == "input 'age' has 3 rows; input 'income' has 2"


def test_v2_bytes_input_takes_only_strings():
    body = per_column_request(region=tensor("region", "BYTES", [2, 1], ["north", 7]))

    assert invalid(body) == "input 'region' row 1 is 7; the model expects strings (BYTES)"


def test_v2_numeric_input_rejects_text_and_nulls():
    assert invalid(per_column_request(age=tensor("age", "FP32", [2, 1], [30, "old"]))) == (
        "input 'age' row 1 is \"old\"; the model expects FP32 numbers"
    )
    assert invalid(per_column_request(age=tensor("age", "FP32", [2, 1], [None, 30]))) == (
        "input 'age' row 0 is null; the model expects FP32 numbers"
    )


def test_v2_value_beyond_the_datatype_range_is_rejected():
    signature = ModelSignature(inputs=[TensorSpec(name="small", datatype="INT8", shape=[-1])], outputs=[])

    assert invalid({"inputs": [tensor("small", "INT8", [2], [1, 300])]}, signature) == (
        "input 'small' row 1 is 300, beyond the range of INT8"
    )


def test_v2_unsigned_input_keeps_its_largest_value_exactly():
    signature = ModelSignature(inputs=[TensorSpec(name="id", datatype="UINT64", shape=[-1])], outputs=[])

    inputs, _ = parse_v2_request({"inputs": [tensor("id", "UINT64", [2], [1.0, 2**64 - 1])]}, signature)

    assert inputs["id"].tolist() == [1, 2**64 - 1]
    assert invalid({"inputs": [tensor("id", "UINT64", [1], [2**64])]}, signature) == (
        "input 'id' row 0 is 18446744073709551616, beyond the range of UINT64"
    )


def test_v2_body_that_is_not_json_is_rejected():
    assert invalid(b"{not json").startswith("the request body is not valid JSON")


def test_v2_unknown_requested_output_is_rejected():
    body = per_column_request() | {"outputs": [{"name": "score"}]}

    assert invalid(body) == "unknown output 'score'; the model's outputs are label, probabilities"


# ---------------------------------------------------------------- non-finite values


@pytest.mark.parametrize(
    ("value", "shown"),
    [("NaN", "NaN"), ("Infinity", "Infinity"), ("-Infinity", "-Infinity"), (math.nan, "NaN")],
)
def test_v2_non_finite_numbers_are_rejected_by_default(value, shown):
    body = per_column_request(income=tensor("income", "FP32", [3, 1], [1.0, 2.0, value]))
    body["inputs"] = [body["inputs"][0]]

    message = invalid(body, ModelSignature(inputs=PER_COLUMN.inputs[:1], outputs=[]))

    assert message == f"input 'income' row 2 is {shown}; the model does not accept non-finite values"


def test_v2_nan_token_parsed_by_python_json_is_rejected_by_default():
    signature = ModelSignature(inputs=PER_COLUMN.inputs[:1], outputs=[])
    body = json.loads('{"inputs": [{"name": "income", "datatype": "FP32", "shape": [1, 1], "data": [NaN]}]}')

    assert invalid(body, signature) == (
        "input 'income' row 0 is NaN; the model does not accept non-finite values"
    )


def test_v2_non_finite_numbers_are_accepted_when_allowed():
    body = per_column_request(income=tensor("income", "FP32", [2, 1], ["NaN", "-Infinity"]))

    inputs, _ = parse_v2_request(body, PER_COLUMN, allow_non_finite=True)

    assert np.isnan(inputs["income"][0, 0])
    assert inputs["income"][1, 0] == -np.inf


# ---------------------------------------------------------------- v1 instances


def test_v1_positional_instances_follow_the_signature_input_order():
    body = {"instances": [[50_000, 30, 0.25, "north"], [61_000, 41, 0.5, "south"]]}

    inputs = parse_v1_instances(orjson.dumps(body), PER_COLUMN).inputs

    assert inputs["income"].dtype == np.float32
    np.testing.assert_array_equal(inputs["age"], [[30.0], [41.0]])
    assert inputs["region"].tolist() == [["north"], ["south"]]


def test_v1_named_instances_give_the_same_inputs_as_positional_ones():
    positional = {"instances": [[50_000, 30, 0.25, "north"]]}
    named = {"instances": [{"region": "north", "debt_ratio": 0.25, "age": 30, "income": 50_000}]}

    from_positional = parse_v1_instances(positional, PER_COLUMN).inputs
    from_named = parse_v1_instances(named, PER_COLUMN).inputs

    for name, array in from_positional.items():
        np.testing.assert_array_equal(from_named[name], array)


def test_v1_instances_of_a_single_input_model_fill_its_rows():
    inputs = parse_v1_instances({"instances": [[1, 2, 3, 4], [5, 6, 7, 8]]}, SINGLE_INPUT).inputs

    assert inputs["X"].shape == (2, 4)
    assert inputs["X"].dtype == np.float32
    np.testing.assert_array_equal(inputs["X"][1], [5, 6, 7, 8])


def test_v1_single_input_instance_of_the_wrong_length_is_rejected():
    body = {"instances": [[1, 2, 3, 4], [5, 6, 7]]}

    assert invalid_v1(body, SINGLE_INPUT) == "instance 1 has 3 values; the model expects 4 (input 'X')"


def test_v1_instance_with_the_wrong_feature_count_names_the_expected_features():
    body = {"instances": [[1, 2, 3, "a"], [1, 2, 3, "b"], [1, 2, 3, "c"], [1, 2, "d"]]}

    assert invalid_v1(body) == (
        "instance 3 has 3 features; the model expects 4 (income, age, debt_ratio, region)"
    )


def test_v1_mixed_positional_and_named_instances_are_rejected():
    body = {
        "instances": [
            [50_000, 30, 0.25, "north"],
            {"income": 1, "age": 2, "debt_ratio": 0.1, "region": "south"},
        ]
    }

    assert invalid_v1(body) == (
        "instance 1 is an object but instance 0 is a list; send every instance in one form"
    )


def test_v1_named_instance_with_a_missing_or_unknown_feature_is_rejected():
    missing = {"instances": [{"income": 1, "age": 2, "debt_ratio": 0.1}]}
    unknown = {"instances": [{"income": 1, "age": 2, "debt_ratio": 0.1, "region": "n", "colour": "red"}]}

    assert invalid_v1(missing).startswith("instance 0 is missing feature 'region'")
    assert invalid_v1(unknown).startswith("instance 0 has unknown feature 'colour'")


def test_v1_nan_is_rejected_unless_allowed():
    body = {"instances": [[1, 2, 0.1, "n"], [1, 2, 0.1, "n"], ["NaN", 2, 0.1, "n"]]}

    assert invalid_v1(body) == "input 'income' row 2 is NaN; the model does not accept non-finite values"
    assert np.isnan(parse_v1_instances(body, PER_COLUMN, allow_non_finite=True).inputs["income"][2, 0])


def test_v1_body_without_instances_is_rejected():
    assert invalid_v1({"inputs": []}) == "the request needs 'instances', a non-empty list"


ANY_WIDTH_FP64 = ModelSignature(
    inputs=[TensorSpec(name="X", datatype="FP64", shape=[-1, -1])],
    outputs=CLASSIFIER_OUTPUTS,
)

# Bodies as clients send them (bytes): rows of numbers are read straight into an array; anything that
# reading could get wrong goes the general way. Either way the answer must be the same.
V1_BODIES = [
    b'{"instances": [[1.5, 2, 3, 4], [5, 6, 7, 8e-3]]}',
    b'{"instances":[[1,2,3,4]]}',
    b'{"instances": [[-0.0, 0.1, 1e-400, 16777217]], "parameters": {"note": "x"}}',
    b'{"instances": [[1, 2, 3, 4], [5, 6, 7]]}',
    b'{"instances": [[1, 2, 3], [4, 5, 6, 7, 8]]}',
    b'{"instances": [[1, 2, 3, [4]], [5, 6, 7, 8]]}',
    b'{"instances": [[1, 2, 3, 4, []], [5, 6, 7, 8]]}',
    b'{"instances": [[[1, 2, 3, 4]], [5, 6, 7, 8]]}',
    b'{"instances": [5, [[1, 2, 3, 4]]]}',
    b'{"instances": [1, 2, 3, 4]}',
    b'{"instances": [[1, 2, 3, true], [5, 6, 7, 8]]}',
    b'{"instances": [[1, 2, 3, null]]}',
    b'{"instances": [[1, 2, 3, "NaN"]]}',
    b'{"instances": [[1, 2, 3, "4"]]}',
    b'{"instances": [[1, 2, 3, {"a": 1}]]}',
    b'{"instances": [[1, 2, 3, 4]], "instances": [[5, 6, 7, 8]]}',
    b'{"instances": [[1, 2, 3, 4]], "parameters": {"ids": [7]}}',
    b'{"instances": [[1, 2, 3, 9007199254740993]]}',
    b'{"instances": [[1, 2, 3, 18446744073709551615]]}',
    b'{"instances": [[1, 2, 3, 1152921573326323713]]}',
    b'{"instances": [[1, 2, 3, 1000000000000000000000000000000]]}',
    b'{"instances": [[1, 2, 3, 1e39]]}',
    b'{"instances": [[1, 2, 3, -1e39]]}',
    b'{"instances": [[1, 2, 3, 1e400]]}',
    b'{"instances": [[1, 2, 3]]}',
    b'{"instances": [[1, 2, 3, 4, 5]]}',
    b'{"instances": []}',
    b'{"instances": [[]]}',
    b'{"instances": [[1, 2, 3, 4]]',
    b'{"instances": [[1, 2, 3, NaN]]}',
    b'\xff{"instances": [[1, 2, 3, 4]]}',
    b"[[1, 2, 3, 4]]",
    b'{"rows": [[1, 2, 3, 4]]}',
]


def read_either_way(body: bytes | dict[str, Any], signature: ModelSignature) -> dict[str, Any] | str:
    """The arrays, as dtype, shape and exact values, or the refusal's message. Rows read with their JSON
    text (for the prediction log) must be the body's rows, number for number."""
    try:
        read = parse_v1_instances(body, signature)
    except InvalidInput as error:
        return str(error)
    if read.rows_json is not None:
        assert isinstance(body, bytes)
        assert orjson.loads(b"[" + read.rows_json + b"]") == orjson.loads(body)["instances"]
    return exact(read.inputs)


def exact(inputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """Each array's dtype, shape and values to the bit (-0.0 is not 0.0; strings as themselves)."""
    return {
        name: (array.dtype, array.shape, array.tolist() if array.dtype == object else array.tobytes())
        for name, array in inputs.items()
    }


@pytest.mark.parametrize("signature", [SINGLE_INPUT, ANY_WIDTH_FP64], ids=["fp32-4", "fp64-any"])
@pytest.mark.parametrize("body", V1_BODIES)
def test_v1_body_as_bytes_reads_as_the_general_path_does(body: bytes, signature: ModelSignature) -> None:
    assert_read_as_the_general_path_reads(lambda sent: read_either_way(sent, signature), body)


def assert_read_as_the_general_path_reads(read: Callable[[bytes | dict[str, Any]], Any], body: bytes) -> None:
    """`read` of the body as bytes (the fast reading, where it applies) gives what `read` of the body
    decoded by orjson (the general path) gives: the same arrays, metadata or refusal."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        decoded = None
    general = read(decoded) if isinstance(decoded, dict) else None

    got = read(body)

    if general is None:  # not a JSON object: refused, naming the problem
        assert isinstance(got, str)
        assert got.startswith(("the request body is not valid JSON", "the request body must be"))
    else:
        assert got == general


def test_v1_rows_of_numbers_are_read_without_the_general_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def general_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rows of numbers went the general way")

    monkeypatch.setattr("services.serving.protocol.instances_to_tensors", general_path)
    rows = [[round(row * 0.37 + column, 4) for column in range(4)] for row in range(100)]

    body = orjson.dumps({"instances": rows})
    read = parse_v1_instances(body, SINGLE_INPUT)

    np.testing.assert_array_equal(read.inputs["X"], np.array(rows, dtype=np.float32))
    assert read.rows_json is not None
    assert b"[" + read.rows_json + b"]" == orjson.dumps(rows)


@pytest.mark.parametrize(
    ("body", "rows_json"),
    [
        (b'{"instances": [[1, 2, 3, 4], [5, 6e0, 7.5, -8]]}', b"[1, 2, 3, 4], [5, 6e0, 7.5, -8]"),
        (b'{ "instances" :\n [ [1,2,3,4]\n ,[5,6,7,8] \n] , "note": "]]" }', b" [1,2,3,4]\n ,[5,6,7,8]"),
        (b'{"note": "] ]", "instances": [[1,2,3,4]]}', b"[1,2,3,4]"),
    ],
    ids=["spaced", "newlines-and-a-later-key", "an-earlier-key"],
)
def test_v1_rows_keep_their_json_text_as_sent(body: bytes, rows_json: bytes) -> None:
    read = parse_v1_instances(body, SINGLE_INPUT)

    assert read.rows_json is not None
    assert read.rows_json == rows_json


def test_v1_rows_written_mostly_in_whitespace_are_not_kept_as_text() -> None:
    """The prediction log holds the text until it is published: text far longer than its numbers need
    (here 1,000 spaces among 4 numbers) is not kept, and the log writes the arrays instead."""
    body = b'{"instances": [[1,' + b" " * 1000 + b"2, 3, 4]]}"
    read = parse_v1_instances(body, SINGLE_INPUT)
    np.testing.assert_array_equal(read.inputs["X"], [[1, 2, 3, 4]])
    assert read.rows_json is None


def test_v1_rows_read_the_general_way_have_no_json_text() -> None:
    named = {"instances": [{"region": "north", "debt_ratio": 0.25, "age": 30, "income": 50_000}]}
    assert parse_v1_instances(orjson.dumps(named), PER_COLUMN).rows_json is None
    positional = {"instances": [[50_000, 30, 0.25, "north"]]}
    assert parse_v1_instances(orjson.dumps(positional), PER_COLUMN).rows_json is None


def x_tensor(data: str, *, shape: str = "[2, 4]", datatype: str = "FP32", extra: str = "") -> bytes:
    """A V2 body with one input "X", written by hand so that it can hold what a JSON encoder never writes."""
    return b'{"inputs": [{"name": "X", "shape": %b, "datatype": "%b", "data": %b%b}]}' % (
        shape.encode(),
        datatype.encode(),
        data.encode(),
        extra.encode(),
    )


V2_BODIES = [
    x_tensor("[1.5, 2, 3, 4, 5, 6, 7, 8e-3]"),
    x_tensor("[[1.5, 2, 3, 4], [5, 6, 7, 8e-3]]"),
    x_tensor("[[1, 2, 3], [4, 5, 6, 7, 8]]"),  # ragged, yet eight values: both ways flatten it
    x_tensor("[[1, [2, [3]]], 4, 5, 6, 7, 8]"),
    x_tensor("[[], [1, 2, 3, 4, 5, 6, 7, 8]]"),
    x_tensor("[-0.0, 0.1, 1e-400, 16777217, 5, 6, 7, 8]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, true]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, null]"),
    x_tensor('[1, 2, 3, 4, 5, 6, 7, "NaN"]'),
    x_tensor('[1, 2, 3, 4, 5, 6, 7, "8"]'),
    x_tensor('[1, 2, 3, 4, 5, 6, 7, {"a": 1}]'),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, 9007199254740993]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, 18446744073709551615]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, 1152921573326323713]"),  # 2**60 + 2**36 + 1: read as a double first,
    # it becomes a tie between two FP32 values and rounds down; as an integer it rounds up
    x_tensor("[1, 2, 3, 4, 5, 6, 7, 1000000000000000000000000000000]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, 1e39]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, -1e39]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, 1e400]"),
    x_tensor("[1, 2, 3, 4, 5, 6, 7, NaN]"),
    x_tensor("[]", shape="[0, 4]"),
    x_tensor("[[]]", shape="[0, 4]"),
    x_tensor("[1, 2, 3, 4]", shape="[1, 4]", datatype="FP64"),
    x_tensor("[1, 2, 3, 4]", shape="[4]"),
    x_tensor("[1, 2, 3, 4]", shape='"4"'),
    x_tensor("7", shape="[1, 1]"),
    x_tensor('"1, 2, 3, 4"', shape="[1, 4]"),
    x_tensor("[1, 2, 3, 4]", shape="[1, 4]", extra=', "parameters": {"binary_data_size": 16}'),
    x_tensor("[1, 2, 3, 4]", shape="[1, 4]", extra=', "data": [5, 6, 7, 8]'),
    x_tensor("[1, 2, 3, 4]", shape="[1, 4]", extra=', "name": "Y"'),
    b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}], "id": "r-1",'
    b' "outputs": [{"name": "label"}], "parameters": {"note": "x", "note": "y", "ids": [7]}}',
    b'{"id": "a\\ud800b",'  # a lone surrogate: not valid JSON for orjson
    b' "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
    b'{"id": 7, "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
    b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],'
    b' "outputs": [{"name": "margin"}]}',
    b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}],'
    b' "inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5, 6, 7, 8]}]}',
    b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},'
    b' {"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [5, 6, 7, 8]}]}',
    b'{"inputs": [{"name": ["X"], "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
    b'{"inputs": [{"name": "Z", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
    b'{"inputs": [[1, 2, 3, 4]]}',
    b'{"inputs": []}',
    b'{"inputs": {"name": "X"}}',
    b'{"instances": [[1, 2, 3, 4]]}',
    b'{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]',
    b'\xff{"inputs": [{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
    b'[{"name": "X", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]',
    orjson.dumps(per_column_request(rows=2)),
    orjson.dumps(per_column_request(rows=2, age=tensor("age", "FP32", [2, 1], [[30], [31]]))),
    orjson.dumps(per_column_request(rows=2, age=tensor("age", "FP32", [2, 1], [30, "31"]))),
    orjson.dumps(per_column_request(rows=2, region=tensor("region", "BYTES", [2, 1], [1, 2]))),
]


def read_v2_either_way(body: bytes | dict[str, Any], signature: ModelSignature) -> tuple[Any, ...] | str:
    """The arrays (dtype, shape, exact values) and the metadata, or the refusal's message."""
    try:
        inputs, meta = parse_v2_request(body, signature)
    except InvalidInput as error:
        return str(error)
    return exact(inputs), meta


@pytest.mark.parametrize(
    "signature", [SINGLE_INPUT, ANY_WIDTH_FP64, PER_COLUMN], ids=["fp32-4", "fp64-any", "per-column"]
)
@pytest.mark.parametrize("body", V2_BODIES)
def test_v2_body_as_bytes_reads_as_the_general_path_does(
    body: bytes, signature: ModelSignature, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("services.serving.protocol._V2_FAST_READ_MIN_BYTES", 0)  # these bodies are small
    assert_read_as_the_general_path_reads(lambda sent: read_v2_either_way(sent, signature), body)


def test_v2_number_tensors_are_read_without_a_python_object_per_number(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def general_path(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the tensor's numbers went the general way")

    monkeypatch.setattr("services.serving.protocol._flatten", general_path)
    monkeypatch.setattr("services.serving.protocol._json_object", general_path)
    rows = [[round(row * 0.37 + column, 4) for column in range(4)] for row in range(100)]
    body = {"id": "r-7", "inputs": [tensor("X", "FP32", [100, 4], [v for row in rows for v in row])]}

    inputs, meta = parse_v2_request(orjson.dumps(body), SINGLE_INPUT)

    np.testing.assert_array_equal(inputs["X"], np.array(rows, dtype=np.float32))
    assert meta.request_id == "r-7"


# ---------------------------------------------------------------- responses


def classifier_outputs() -> dict[str, np.ndarray]:
    return {
        "label": np.array([1, 0], dtype=np.int64),
        "probabilities": np.array([[0.25, 0.75], [0.875, 0.125]], dtype=np.float32),
    }


def test_v2_response_lists_outputs_with_datatype_shape_and_flat_data():
    response = encode_v2_response("credit", "3", classifier_outputs(), PER_COLUMN, "req-1", None)

    assert response == {
        "model_name": "credit",
        "model_version": "3",
        "id": "req-1",
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [1, 0]},
            {
                "name": "probabilities",
                "datatype": "FP32",
                "shape": [2, 2],
                "data": [0.25, 0.75, 0.875, 0.125],
            },
        ],
    }
    orjson.dumps(response)  # plain Python values only


def test_v2_response_keeps_only_the_requested_outputs():
    response = encode_v2_response("credit", "3", classifier_outputs(), PER_COLUMN, "req-1", ["probabilities"])

    assert [output["name"] for output in response["outputs"]] == ["probabilities"]


def test_v2_response_encodes_string_outputs_as_bytes():
    outputs = {"label": np.array(["yes", "no"], dtype=object)}

    response = encode_v2_response("m", "1", outputs, PER_COLUMN, "r", None)

    assert response["outputs"] == [
        {"name": "label", "datatype": "BYTES", "shape": [2], "data": ["yes", "no"]}
    ]


def test_v1_classifier_predictions_give_label_and_probabilities_per_row():
    response = encode_v1_predictions(classifier_outputs(), class_labels=[0, 1])

    assert response == {
        "predictions": [
            {"label": 1, "probabilities": [0.25, 0.75]},
            {"label": 0, "probabilities": [0.875, 0.125]},
        ],
        "class_labels": [0, 1],
    }


def test_v1_regressor_predictions_are_plain_values():
    response = encode_v1_predictions({"variable": np.array([[1.5], [2.5]], dtype=np.float32)})

    assert response == {"predictions": [1.5, 2.5]}
