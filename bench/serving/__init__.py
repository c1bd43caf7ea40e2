"""The serving benchmark: Flywheel's serving service against `mlflow models serve`, a hand-built FastAPI
and onnxruntime app and a bare ASGI app, on the same scikit-learn models, with the same load generator."""
