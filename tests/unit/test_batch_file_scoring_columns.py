"""Scoring a table's columns in one call: named inputs and a single input built from listed columns, each
row that does not fit rejected with a reason naming the feature, the others scored as `score` would."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from services.batch.scoring import ModelRef, ScoringModels, columns_to_inputs
from shared.artifacts import FilesystemArtifactStore
from shared.events import ModelSignature, TensorSpec
from shared.model_versions import VersionRecord
from shared.tensors import InvalidInput
from tests.models import per_column_classifier_onnx, tiny_classifier_onnx


class Registry:
    """Version 1 of `matrix` (one [-1, 4] input) and of `columns` (an input per column)."""

    def __init__(self, records: dict[str, VersionRecord]) -> None:
        self.records = records

    async def describe(self, name: str, version: int | None, alias: str | None) -> VersionRecord | None:
        return self.records.get(name)


@pytest.fixture
async def models(tmp_path: Path) -> ScoringModels:
    store = FilesystemArtifactStore(tmp_path)
    await store.start()
    records = {}
    for name, model, inputs in (
        ("matrix", tiny_classifier_onnx(), [TensorSpec(name="X", datatype="FP32", shape=[-1, 4])]),
        (
            "columns",
            per_column_classifier_onnx(),
            [
                TensorSpec(name="income", datatype="FP32", shape=[-1, 1]),
                TensorSpec(name="age", datatype="FP32", shape=[-1, 1]),
                TensorSpec(name="region", datatype="BYTES", shape=[-1, 1]),
            ],
        ),
    ):
        stored = await store.put_bytes(f"models/{name}.onnx", model)
        signature = ModelSignature(
            inputs=inputs,
            outputs=[
                TensorSpec(name="label", datatype="INT64", shape=[-1]),
                TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 2]),
            ],
        )
        records[name] = VersionRecord(name, 1, stored.uri, hashlib.sha256(model).hexdigest(), signature)
    return ScoringModels(Registry(records).describe, store, intra_op_threads=1)


async def test_named_columns_feed_a_model_with_an_input_per_feature(models: ScoringModels) -> None:
    version = await models.resolve(ModelRef("columns", version=1))
    columns = {
        "income": np.array([60.0, 40.0, 55.0]),
        "age": np.array([30, 50, 41]),
        "region": np.array(["north", "south", "mars"], dtype=object),
        "unused": np.array(["a", "b", "c"]),
    }
    scored = await models.score_columns(version, columns)
    assert (scored.scored, scored.rejected) == ([0, 1, 2], {})
    assert scored.outputs["probabilities"].shape == (3, 2)
    assert scored.inputs["region"].tolist() == [["north"], ["south"], ["mars"]]
    by_rows = await models.score(
        version,
        [{"income": 60.0, "age": 30.0, "region": "north"}, {"income": 40.0, "age": 50.0, "region": "south"}],
    )
    assert np.allclose(scored.outputs["probabilities"][:2], by_rows.outputs["probabilities"])


async def test_listed_columns_make_a_single_input_in_their_order(models: ScoringModels) -> None:
    version = await models.resolve(ModelRef("matrix", version=1))
    rows = np.random.default_rng(0).normal(size=(5, 4))
    columns = {f"f{index}": rows[:, index] for index in range(4)}
    scored = await models.score_columns(version, columns, ["f0", "f1", "f2", "f3"])
    by_rows = await models.score(version, rows.tolist())
    assert scored.scored == [0, 1, 2, 3, 4]
    assert np.allclose(scored.outputs["probabilities"], by_rows.outputs["probabilities"])
    swapped = await models.score_columns(version, columns, ["f1", "f0", "f2", "f3"])
    assert not np.allclose(swapped.outputs["probabilities"], by_rows.outputs["probabilities"])


async def test_rows_that_do_not_fit_are_rejected_naming_the_feature_and_the_rest_scored(
    models: ScoringModels,
) -> None:
    version = await models.resolve(ModelRef("columns", version=1))
    columns = {
        "income": np.array([60.0, "abc", np.nan, 1e39, 50.0, None], dtype=object),
        "age": np.array([30.0, 31.0, 32.0, 33.0, 34.0, 35.0]),
        "region": np.array(["north", "south", "east", "west", 7, "north"], dtype=object),
    }
    scored = await models.score_columns(version, columns)
    assert scored.scored == [0]
    assert scored.rejected == {
        1: "feature 'income' is \"abc\"; the model expects FP32 numbers",
        2: "feature 'income' is NaN; the model does not accept non-finite values",
        3: "feature 'income' is 1e+39, beyond the range of FP32",
        4: "feature 'region' is 7; the model expects strings (BYTES)",
        5: "feature 'income' is null; the model expects FP32 numbers",
    }
    assert len(scored.outputs["label"]) == 1
    assert scored.inputs["income"].tolist() == [[60.0]]


async def test_every_row_rejected_scores_nothing(models: ScoringModels) -> None:
    version = await models.resolve(ModelRef("matrix", version=1))
    columns = {name: np.array([np.inf, np.nan]) for name in ("a", "b", "c", "d")}
    scored = await models.score_columns(version, columns, ["a", "b", "c", "d"])
    assert (scored.scored, scored.outputs) == ([], {})
    assert scored.rejected == {
        0: "feature 'a' is Infinity; the model does not accept non-finite values",
        1: "feature 'a' is NaN; the model does not accept non-finite values",
    }


def test_integer_inputs_take_whole_numbers_within_range() -> None:
    signature = ModelSignature(
        inputs=[TensorSpec(name="count", datatype="INT8", shape=[-1, 1])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1])],
    )
    scored, inputs, rejected = columns_to_inputs({"count": np.array([3.0, 2.5, 300.0, -4.0])}, signature)
    assert scored == [0, 3]
    assert inputs["count"].dtype == np.int8
    assert inputs["count"].tolist() == [[3], [-4]]
    assert rejected == {
        1: "feature 'count' is 2.5; the model expects INT8 integers",
        2: "feature 'count' is 300.0, beyond the range of INT8",
    }


@pytest.mark.parametrize(
    ("columns", "features", "message"),
    [
        ({"a": np.zeros(2)}, None, "4 features; 0 column(s) given"),
        ({"a": np.zeros(2)}, ["a"], "4 features; 1 column(s) given"),
        (
            {"a": np.zeros(2), "b": np.zeros(2), "c": np.zeros(2)},
            ["a", "b", "c", "d"],
            "no column for feature(s) 'd'",
        ),
        (
            {"a": np.zeros(2), "b": np.zeros(3), "c": np.zeros(2), "d": np.zeros(2)},
            ["a", "b", "c", "d"],
            "differ in length",
        ),
    ],
)
def test_columns_that_do_not_fit_the_model_are_refused(
    columns: dict[str, np.ndarray], features: list[str] | None, message: str
) -> None:
    signature = ModelSignature(
        inputs=[TensorSpec(name="X", datatype="FP32", shape=[-1, 4])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1])],
    )
    with pytest.raises(InvalidInput, match=message.replace("(", r"\(").replace(")", r"\)")):
        columns_to_inputs(columns, signature, features)


def test_a_model_with_an_input_per_feature_takes_no_feature_list() -> None:
    signature = ModelSignature(
        inputs=[TensorSpec(name="a", datatype="FP32", shape=[-1, 1])],
        outputs=[TensorSpec(name="y", datatype="FP32", shape=[-1])],
    )
    with pytest.raises(InvalidInput, match="by name"):
        columns_to_inputs({"a": np.zeros(1)}, signature, ["a"])
