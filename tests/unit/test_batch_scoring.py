"""Batch scoring: versions resolved by number or alias and loaded once, an alias move taking effect
at the next resolve, and a bad row rejected with its reason while the others are scored."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from onnxruntime.capi.onnxruntime_pybind11_state import Fail

from services.batch.scoring import ModelRef, ScoringModels, _checked_inputs
from shared.artifacts import FilesystemArtifactStore
from shared.events import ModelSignature, TensorSpec
from shared.model_versions import ModelNotFound
from tests.models import tiny_classifier_onnx
from tests.unit.test_serving_models import Registry, SlowStore


@pytest.fixture
async def models(tmp_path: Path) -> tuple[ScoringModels, Registry]:
    store = FilesystemArtifactStore(tmp_path)
    await store.start()
    stored = await store.put_bytes("models/credit/model.onnx", tiny_classifier_onnx())
    registry = Registry(stored.uri, hashlib.sha256(tiny_classifier_onnx()).hexdigest())
    return ScoringModels(registry.describe, store, intra_op_threads=1, max_loaded=2), registry


async def test_versions_resolve_by_alias_and_number_and_load_once(
    models: tuple[ScoringModels, Registry],
) -> None:
    scoring, registry = models
    production = await scoring.resolve(ModelRef("credit"))
    assert production.version == 1
    assert await scoring.resolve(ModelRef("credit")) is production
    assert registry.lookups == 1
    assert (await scoring.resolve(ModelRef("credit", version=2))).version == 2
    scoring.promote("credit", "production", 3)
    assert (await scoring.resolve(ModelRef("credit"))).version == 3
    with pytest.raises(ModelNotFound, match="credit@canary"):
        await scoring.resolve(ModelRef("credit", alias="canary"))
    with pytest.raises(ModelNotFound, match="nope v1"):
        await scoring.resolve(ModelRef("nope", version=1))


async def test_a_bad_row_is_rejected_with_its_reason_and_the_rest_scored(
    models: tuple[ScoringModels, Registry],
) -> None:
    scoring, _ = models
    version = await scoring.resolve(ModelRef("credit"))
    rows = [[0.1, 0.2, 0.3, 0.4], [1.0, 2.0], [0.5, "x", 0.1, 0.2], [0.0, 0.0, 0.0, 1.0]]
    scored = await scoring.score(version, rows)
    assert scored.scored == [0, 3]
    assert set(scored.rejected) == {1, 2}
    assert "has 2 values; the model expects 4" in scored.rejected[1]
    assert '"x"' in scored.rejected[2]
    assert set(scored.outputs) == {"label", "probabilities"}
    assert len(scored.outputs["label"]) == 2
    assert sum(scored.outputs["probabilities"][0]) == pytest.approx(1.0, rel=1e-5)
    all_good = await scoring.score(version, rows[:1] * 3)
    assert (all_good.scored, all_good.rejected) == ([0, 1, 2], {})


async def test_deleted_aliases_and_versions_are_asked_of_the_registry_again(
    models: tuple[ScoringModels, Registry],
) -> None:
    scoring, registry = models
    await scoring.resolve(ModelRef("credit"))  # production -> v1
    await scoring.resolve(ModelRef("credit", version=2))
    scoring.promote("credit", "canary", 2)
    lookups = registry.lookups
    del registry.aliases[("credit", "production")]

    scoring.forget_alias("credit", "production")
    scoring.forget_versions("credit", [2])

    with pytest.raises(ModelNotFound, match="credit@production"):
        await scoring.resolve(ModelRef("credit"))
    with pytest.raises(ModelNotFound, match="credit@canary"):  # it pointed at v2
        await scoring.resolve(ModelRef("credit", alias="canary"))
    assert registry.lookups == lookups + 2


async def test_a_version_deleted_while_it_loads_is_not_kept(tmp_path: Path) -> None:
    """The batch that asked for it is refused it (its records are dead-lettered as for any deleted
    version), and later batches do not find it loaded."""
    store = SlowStore(tmp_path)
    await store.start()
    stored = await store.put_bytes("models/credit/model.onnx", tiny_classifier_onnx())
    registry = Registry(stored.uri, hashlib.sha256(tiny_classifier_onnx()).hexdigest())
    scoring = ScoringModels(registry.describe, store, intra_op_threads=1)
    batch = asyncio.ensure_future(scoring.resolve(ModelRef("credit", version=2)))
    await store.reading.wait()

    scoring.forget_versions("credit", [2])
    store.release.set()

    with pytest.raises(ModelNotFound, match="version 2 was deleted as it loaded"):
        await batch
    lookups = registry.lookups
    assert (await scoring.resolve(ModelRef("credit", version=2))).version == 2  # loaded again, not kept
    assert registry.lookups == lookups + 1


def _signature(*inputs: TensorSpec) -> ModelSignature:
    return ModelSignature(
        inputs=list(inputs), outputs=[TensorSpec(name="label", datatype="INT64", shape=[-1])]
    )


def test_named_and_positional_records_are_scored_together_in_their_order() -> None:
    """Each record is a request of its own: for a model with an input per feature, one may name its
    features and the next list them (converting all at once refused the mix and stopped the stream)."""
    signature = _signature(*(TensorSpec(name=name, datatype="FP32", shape=[-1, 1]) for name in "abc"))
    rows = [{"a": 1, "b": 2, "c": 3}, [4, 5, 6], {"c": 9, "a": 7, "b": 8}, [1, 2], [10, 11, 12]]
    scored, inputs, rejected = _checked_inputs(rows, signature)
    assert scored == [0, 1, 2, 4]
    assert list(rejected) == [3]
    assert inputs["a"].ravel().tolist() == [1, 4, 7, 10]
    assert inputs["c"].ravel().tolist() == [3, 6, 9, 12]


def test_rows_of_another_width_than_the_first_are_refused_for_an_input_of_any_width() -> None:
    """An input of any width (-1) takes one width in a call: the first row's; the others say why."""
    signature = _signature(TensorSpec(name="x", datatype="FP32", shape=[-1, -1]))
    rows = [[1, 2, 3], [1, 2], [4, 5, 6], "no row", [7, 8, 9, 10]]
    scored, inputs, rejected = _checked_inputs(rows, signature)
    assert scored == [0, 2]
    assert inputs["x"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert set(rejected) == {1, 3, 4}
    assert "has 2 values and the first of its batch 3" in rejected[1]
    assert "has 4 values and the first of its batch 3" in rejected[4]


class _FailsOnNegativeFirstFeature:
    """An onnxruntime session that fails, as onnxruntime does, on any call holding a row whose first
    feature is negative."""

    def __init__(self, session: Any) -> None:
        self.session = session

    def run(self, output_names: list[str], inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
        if any((array[:, 0] < 0).any() for array in inputs.values()):
            raise Fail("[ONNXRuntimeError] : 1 : FAIL : a node refused the input")
        return self.session.run(output_names, inputs)  # type: ignore[no-any-return]


async def test_rows_the_model_fails_on_are_refused_and_the_rest_scored(
    models: tuple[ScoringModels, Registry],
) -> None:
    """One row onnxruntime fails on must not take its batch with it: each row is then scored alone."""
    scoring, _ = models
    version = await scoring.resolve(ModelRef("credit"))
    version.session = _FailsOnNegativeFirstFeature(version.session)
    rows = [[0.1, 0.2, 0.3, 0.4], [-1.0, 0.0, 0.0, 0.0], [1.0, 2.0], [0.5, 0.5, 0.5, 0.5]]
    scored = await scoring.score(version, rows)
    assert scored.scored == [0, 3]
    assert set(scored.rejected) == {1, 2}
    assert scored.rejected[1] == (
        "the model failed on the record: [ONNXRuntimeError] : 1 : FAIL : a node refused the input"
    )
    (features,) = scored.inputs.values()
    assert np.allclose(features, [[0.1, 0.2, 0.3, 0.4], [0.5, 0.5, 0.5, 0.5]])
    assert len(scored.outputs["label"]) == 2
    alone = await scoring.score(version, [[-1.0, 0.0, 0.0, 0.0]])
    assert (alone.scored, alone.outputs, list(alone.rejected)) == ([], {}, [0])
