"""A model server as a team would build one by hand: FastAPI and one onnxruntime `session.run` per
request, no batching, no logging, and the cheap parts done well (the body read and written with orjson,
no pydantic model in between, which made it 15-30% faster here).

Started by the serving benchmark as `uvicorn bench.serving.handbuilt_app:app --workers 2`. It serves every
`<name>.onnx` in the folder named by `BENCH_HANDBUILT_MODEL_DIR` at `POST /v1/models/{name}:predict`,
with the same body and answer as Flywheel's v1 route. Its onnxruntime sessions use
`BENCH_HANDBUILT_INTRA_OP_THREADS` threads, which the benchmark sets as Flywheel's serving sets its own:
the cores divided among the workers, at most 4; left to onnxruntime's default (every core in every
worker), the workers' spinning thread pools fight over the cores and the app is several times slower.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import numpy as np
import onnxruntime
import orjson
from fastapi import FastAPI, HTTPException, Request, Response

MODEL_DIR_VARIABLE = "BENCH_HANDBUILT_MODEL_DIR"
THREADS_VARIABLE = "BENCH_HANDBUILT_INTRA_OP_THREADS"


class Model:
    def __init__(self, path: Path, intra_op_threads: int) -> None:
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name


models: dict[str, Model] = {}


def load_models(directory: Path, intra_op_threads: int) -> None:
    for path in sorted(directory.glob("*.onnx")):
        models[path.stem] = Model(path, intra_op_threads)


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    load_models(Path(os.environ[MODEL_DIR_VARIABLE]), int(os.environ.get(THREADS_VARIABLE, "1")))
    yield
    models.clear()


app = FastAPI(title="hand-built model server", lifespan=lifespan)


@app.get("/health")
async def health() -> dict[str, list[str]]:
    """The models this worker loaded."""
    return {"models": sorted(models)}


@app.post("/v1/models/{name}:predict")
async def predict(name: str, request: Request) -> Response:
    """Labels and class probabilities for `{"instances": [[...], ...]}`, one inference call per request."""
    model = models.get(name)
    if model is None:
        raise HTTPException(status_code=404, detail=f"no model {name!r}")
    try:
        inputs = np.asarray(orjson.loads(await request.body())["instances"], dtype=np.float32)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        raise HTTPException(
            status_code=422, detail=f'expected {{"instances": [[...], ...]}}: {error}'
        ) from None
    labels, probabilities = model.session.run(None, {model.input_name: inputs})
    predictions = [
        {"label": label, "probabilities": row}
        for label, row in zip(labels.tolist(), probabilities.tolist(), strict=True)
    ]
    return Response(orjson.dumps({"predictions": predictions}), media_type="application/json")
