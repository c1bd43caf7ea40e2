"""Run by MLflow's own Python (bench/.venv-mlflow), not Flywheel's: save pickled scikit-learn models as
MLflow model directories, with a tensor signature so that `{"inputs": [[...], ...]}` reaches the model as
a numpy array.

    python mlflow_model.py SAMPLE.npy MODEL.joblib OUTPUT_DIR [MODEL.joblib OUTPUT_DIR ...]
"""

from __future__ import annotations

import sys

import joblib  # type: ignore[import-untyped]
import mlflow.sklearn  # type: ignore[import-not-found]
import numpy as np
import sklearn
from mlflow.models import infer_signature  # type: ignore[import-not-found]

TRUSTED_TYPES = ["sklearn.tree._tree.Tree"]


def save(sample_path: str, pairs: list[str]) -> None:
    sample = np.load(sample_path).astype(np.float64)
    for model_path, output_dir in zip(pairs[::2], pairs[1::2], strict=True):
        model = joblib.load(model_path)
        mlflow.sklearn.save_model(
            model,
            output_dir,
            signature=infer_signature(sample, model.predict(sample)),
            # Served with --env-manager local: naming the requirements skips MLflow's slow inference of them.
            pip_requirements=[f"scikit-learn=={sklearn.__version__}"],
            # MLflow's default format (skops) refuses tree nodes unless told; these models are our own.
            skops_trusted_types=TRUSTED_TYPES,
        )


if __name__ == "__main__":
    if len(sys.argv) < 4 or len(sys.argv) % 2:
        sys.exit(__doc__)
    save(sys.argv[1], sys.argv[2:])
