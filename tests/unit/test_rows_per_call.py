"""How many rows one onnxruntime call takes: tree ensembles are called with at most 50 rows (beyond, each
row walks every tree and the CPU per row more than doubles), other models with everything at once; the
outputs of calls in parts are the outputs of one call."""

from __future__ import annotations

import numpy as np
import onnxruntime
from skl2onnx import to_onnx
from sklearn.base import ClassifierMixin
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from shared.model_versions import TREE_ENSEMBLE_ROWS_PER_CALL, rows_per_call, run_in_chunks


def onnx_bytes(estimator: ClassifierMixin) -> tuple[bytes, np.ndarray]:
    generator = np.random.default_rng(7)
    features = generator.normal(size=(300, 4)).astype(np.float32)
    estimator.fit(features, (features[:, 0] + features[:, 1] > 0).astype(np.int64))
    model = to_onnx(estimator, features[:1], options={id(estimator): {"zipmap": False}})
    return model.SerializeToString(), features


def test_a_tree_ensemble_takes_at_most_fifty_rows_a_call() -> None:
    model, _ = onnx_bytes(RandomForestClassifier(n_estimators=5, random_state=7))
    assert rows_per_call(model) == TREE_ENSEMBLE_ROWS_PER_CALL == 50


def test_other_models_take_any_number_of_rows() -> None:
    model, _ = onnx_bytes(LogisticRegression())
    assert rows_per_call(model) is None


def test_calls_in_parts_give_the_outputs_of_one_call() -> None:
    model, features = onnx_bytes(RandomForestClassifier(n_estimators=5, random_state=7))
    session = onnxruntime.InferenceSession(model, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    inputs = {session.get_inputs()[0].name: features[:123]}
    whole = dict(zip(names, session.run(names, inputs), strict=True))
    for rows in (50, 7, 123, 500, None):
        parts = run_in_chunks(session, names, inputs, rows)
        assert list(parts) == names
        for name in names:
            np.testing.assert_array_equal(parts[name], whole[name])
