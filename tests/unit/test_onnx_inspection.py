"""inspect_model: real skl2onnx and hand-built ONNX models, valid and invalid, on tiny synthetic data."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnx import StringStringEntryProto, TensorProto, helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType, StringTensorType
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import RandomForestClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from services.registry.onnx_inspection import KSERVE_DATATYPES, InvalidModel, inspect_model
from shared.events import TensorSpec

ROWS = 40
OPSET = 17


def _features(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    features = rng.normal(size=(ROWS, 4)).astype(np.float32)
    return features, (features[:, 0] + features[:, 1] > 0).astype(np.int64)


@pytest.fixture(scope="module")
def logistic_regression() -> LogisticRegression:
    return LogisticRegression().fit(*_features())


@pytest.fixture(scope="module")
def logistic_regression_onnx(logistic_regression: LogisticRegression) -> bytes:
    return _logistic_regression_onnx(logistic_regression, zipmap=False)


def _logistic_regression_onnx(estimator: LogisticRegression, *, zipmap: bool) -> bytes:
    options = None if zipmap else {id(estimator): {"zipmap": False}}
    converted = to_onnx(
        estimator,
        initial_types=[("features", FloatTensorType([None, 4]))],
        options=options,
        target_opset=OPSET,
    )
    return bytes(converted.SerializeToString())


@pytest.fixture(scope="module")
def mixed_pipeline_onnx() -> bytes:
    rng = np.random.default_rng(1)
    age = rng.integers(18, 80, size=ROWS).astype(np.float32)
    income = rng.normal(50_000, 15_000, size=ROWS).astype(np.float32)
    city = rng.choice(["paris", "lyon", "nantes"], size=ROWS)
    table = np.column_stack([age, income, city]).astype(object)
    table[:, :2] = table[:, :2].astype(np.float32)
    labels = (income > 50_000).astype(np.int64)
    pipeline = Pipeline(
        [
            (
                "columns",
                ColumnTransformer(
                    [
                        ("numeric", StandardScaler(), [0, 1]),
                        ("category", OneHotEncoder(handle_unknown="ignore"), [2]),
                    ]
                ),
            ),
            ("forest", RandomForestClassifier(n_estimators=3, random_state=0)),
        ]
    ).fit(table, labels)
    converted = to_onnx(
        pipeline,
        initial_types=[
            ("age", FloatTensorType([None, 1])),
            ("income", FloatTensorType([None, 1])),
            ("city", StringTensorType([None, 1])),
        ],
        options={"zipmap": False},
        target_opset=OPSET,
    )
    return bytes(converted.SerializeToString())


def _hand_built_model(
    inputs: list[Any], outputs: list[Any], nodes: list[Any], initializers: list[Any] | None = None
) -> bytes:
    graph = helper.make_graph(nodes, "hand_built", inputs, outputs, initializer=initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8)
    return bytes(model.SerializeToString())


def test_logistic_regression_without_zipmap_has_features_in_and_label_and_probabilities_out(
    logistic_regression_onnx: bytes,
) -> None:
    signature = inspect_model(logistic_regression_onnx)

    assert signature.inputs == [TensorSpec(name="features", datatype="FP32", shape=[-1, 4])]
    assert signature.outputs == [
        TensorSpec(name="label", datatype="INT64", shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 2]),
    ]


def test_pipeline_with_named_numeric_and_string_inputs_runs_on_synthesised_sample(
    mixed_pipeline_onnx: bytes,
) -> None:
    signature = inspect_model(mixed_pipeline_onnx)

    assert signature.inputs == [
        TensorSpec(name="age", datatype="FP32", shape=[-1, 1]),
        TensorSpec(name="income", datatype="FP32", shape=[-1, 1]),
        TensorSpec(name="city", datatype="BYTES", shape=[-1, 1]),
    ]
    assert [(output.datatype, output.shape) for output in signature.outputs] == [
        ("INT64", [-1]),
        ("FP32", [-1, 2]),
    ]


def test_pipeline_runs_on_an_explicit_sample_including_an_unseen_category(mixed_pipeline_onnx: bytes) -> None:
    sample: dict[str, list[Any]] = {
        "age": [[31.0], [64.0]],
        "income": [[42_000.0], [71_000.0]],
        "city": [["paris"], ["tokyo"]],
    }

    assert inspect_model(mixed_pipeline_onnx, sample) == inspect_model(mixed_pipeline_onnx)


def test_regressor_has_one_fp32_output_of_one_value_per_row() -> None:
    features, _ = _features()
    forest = RandomForestRegressor(n_estimators=3, max_depth=3, random_state=0).fit(features, features[:, 0])
    converted = to_onnx(forest, initial_types=[("features", FloatTensorType([None, 4]))], target_opset=OPSET)

    signature = inspect_model(bytes(converted.SerializeToString()))

    assert signature.outputs == [TensorSpec(name="variable", datatype="FP32", shape=[-1, 1])]


def test_every_kserve_datatype_maps_from_its_onnx_type_and_runs_on_synthesised_zeros() -> None:
    onnx_types = {
        "BOOL": TensorProto.BOOL,
        "UINT8": TensorProto.UINT8,
        "UINT16": TensorProto.UINT16,
        "UINT32": TensorProto.UINT32,
        "UINT64": TensorProto.UINT64,
        "INT8": TensorProto.INT8,
        "INT16": TensorProto.INT16,
        "INT32": TensorProto.INT32,
        "INT64": TensorProto.INT64,
        "FP16": TensorProto.FLOAT16,
        "FP32": TensorProto.FLOAT,
        "FP64": TensorProto.DOUBLE,
        "BYTES": TensorProto.STRING,
    }
    model = _hand_built_model(
        inputs=[
            helper.make_tensor_value_info(f"in_{name}", kind, ["batch", 2])
            for name, kind in onnx_types.items()
        ],
        outputs=[
            helper.make_tensor_value_info(f"out_{name}", kind, [None, 2]) for name, kind in onnx_types.items()
        ],
        nodes=[helper.make_node("Identity", [f"in_{name}"], [f"out_{name}"]) for name in onnx_types],
    )

    signature = inspect_model(model)

    assert sorted(KSERVE_DATATYPES.values()) == sorted(onnx_types)
    assert [(spec.datatype, spec.shape) for spec in signature.inputs] == [
        (name, [-1, 2]) for name in onnx_types
    ]
    assert [spec.datatype for spec in signature.outputs] == list(onnx_types)


def test_tensor_type_without_a_kserve_datatype_is_rejected() -> None:
    model = _hand_built_model(
        inputs=[helper.make_tensor_value_info("x", TensorProto.BFLOAT16, [None])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.BFLOAT16, [None])],
        nodes=[helper.make_node("Identity", ["x"], ["y"])],
    )

    with pytest.raises(InvalidModel, match=r"input 'x' is tensor\(bfloat16\), which has no Open Inference"):
        inspect_model(model)


@pytest.mark.parametrize(
    "model",
    [
        pytest.param(b"", id="empty"),
        pytest.param(np.random.default_rng(7).bytes(512), id="random-bytes"),
        pytest.param(b"\x08\x07\x12\x07not-onnx", id="protobuf-without-graph"),
    ],
)
def test_bytes_that_are_not_onnx_are_rejected(model: bytes) -> None:
    with pytest.raises(InvalidModel, match=r"^model does not load in onnxruntime: "):
        inspect_model(model)


def test_truncated_model_is_rejected(logistic_regression_onnx: bytes) -> None:
    with pytest.raises(InvalidModel, match=r"^model does not load in onnxruntime: "):
        inspect_model(logistic_regression_onnx[: len(logistic_regression_onnx) // 2])


def test_unknown_operator_is_rejected() -> None:
    model = _hand_built_model(
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])],
        nodes=[helper.make_node("NoSuchOperator", ["x"], ["y"])],
    )

    with pytest.raises(InvalidModel, match=r"^model does not load in onnxruntime: .*NoSuchOperator"):
        inspect_model(model)


class _WritesMarkerWhenUnpickled:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.write_text, (self.marker, "unpickled"))


def test_pickled_estimator_is_rejected_without_being_unpickled(
    tmp_path: Path, logistic_regression: LogisticRegression
) -> None:
    marker = tmp_path / "unpickled"
    payload = pickle.dumps((logistic_regression, _WritesMarkerWhenUnpickled(marker)))

    with pytest.raises(InvalidModel, match="does not load in onnxruntime"):
        inspect_model(payload)

    assert not marker.exists()
    pickle.loads(payload)  # the trap is armed: unpickling these bytes does write the marker
    assert marker.exists()


def test_classifier_converted_with_zipmap_is_rejected_with_how_to_disable_it(
    logistic_regression: LogisticRegression,
) -> None:
    model = _logistic_regression_onnx(logistic_regression, zipmap=True)

    with pytest.raises(InvalidModel, match=r"output 'output_probability' is seq\(map\(.*zipmap.*False"):
        inspect_model(model)


def test_model_with_external_data_is_rejected_so_it_cannot_serve_local_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.env").write_bytes(b"abcd")
    weights = TensorProto(
        name="weights",
        data_type=TensorProto.UINT8,
        dims=[4],
        data_location=TensorProto.EXTERNAL,
        external_data=[StringStringEntryProto(key="location", value="secret.env")],
    )
    model = _hand_built_model(
        inputs=[],
        outputs=[helper.make_tensor_value_info("y", TensorProto.UINT8, [4])],
        nodes=[helper.make_node("Identity", ["weights"], ["y"])],
        initializers=[weights],
    )

    with pytest.raises(InvalidModel, match=r"external data files \['secret.env'\]"):
        inspect_model(model)
    # An upload spooled to a file resolves external data next to it: refused the same way.
    spooled = tmp_path / "upload" / "model.onnx"
    spooled.parent.mkdir()
    spooled.write_bytes(model)
    (spooled.parent / "secret.env").write_bytes(b"abcd")
    with pytest.raises(InvalidModel, match=r"external data files \['secret.env'\]"):
        inspect_model(spooled)


def test_a_model_spooled_to_a_file_is_inspected_as_its_bytes_are(
    tmp_path: Path, logistic_regression_onnx: bytes
) -> None:
    spooled = tmp_path / "model.onnx"
    spooled.write_bytes(logistic_regression_onnx)
    assert inspect_model(spooled) == inspect_model(logistic_regression_onnx)
    spooled.write_bytes(logistic_regression_onnx[:200])
    with pytest.raises(InvalidModel, match="does not load in onnxruntime"):
        inspect_model(spooled)


def test_sample_missing_an_input_is_rejected_naming_it(mixed_pipeline_onnx: bytes) -> None:
    sample = {"age": [[31.0]], "income": [[42_000.0]]}

    with pytest.raises(InvalidModel, match=r"sample lacks inputs \['city'\]"):
        inspect_model(mixed_pipeline_onnx, sample)


def test_sample_with_an_unknown_input_is_rejected_naming_it(mixed_pipeline_onnx: bytes) -> None:
    sample: dict[str, list[Any]] = {
        "age": [[31.0]],
        "income": [[42_000.0]],
        "city": [["paris"]],
        "zip": [["75001"]],
    }

    with pytest.raises(InvalidModel, match=r"sample has inputs \['zip'\] the model does not declare"):
        inspect_model(mixed_pipeline_onnx, sample)


@pytest.mark.parametrize(
    ("sample", "message"),
    [
        pytest.param(
            {"age": [["old"]], "income": [[42_000.0]], "city": [["paris"]]},
            "sample for input 'age' does not convert to FP32",
            id="text-for-a-number",
        ),
        pytest.param(
            {"age": [[31.0]], "income": [[42_000.0]], "city": [[75001]]},
            "sample for input 'city' must hold strings",
            id="number-for-a-string",
        ),
    ],
)
def test_sample_values_of_the_wrong_type_are_rejected_naming_the_input(
    mixed_pipeline_onnx: bytes, sample: dict[str, list[Any]], message: str
) -> None:
    with pytest.raises(InvalidModel, match=message):
        inspect_model(mixed_pipeline_onnx, sample)


def test_model_that_fails_on_its_synthesised_sample_is_rejected() -> None:
    target_shape = helper.make_tensor("target_shape", TensorProto.INT64, [1], [3])
    model = _hand_built_model(
        inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, ["length"])],
        outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])],
        nodes=[helper.make_node("Reshape", ["x", "target_shape"], ["y"])],
        initializers=[target_shape],
    )

    with pytest.raises(InvalidModel, match=r"^smoke inference failed: "):
        inspect_model(model)
