"""The serving service's own settings (FLYWHEEL_SERVING_*)."""

import os

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.service import ServiceSettings


class ServingSettings(ServiceSettings):
    model_config = SettingsConfigDict(env_prefix="FLYWHEEL_SERVING_", extra="ignore")

    port: int = 8080
    workers: int = Field(
        default_factory=lambda: min(os.cpu_count() or 1, 8),
        ge=1,
        description="processes sharing the port, each holding every model (default: a core each, at most 8)",
    )
    intra_op_threads: int | None = Field(
        default=None,
        ge=1,
        description="onnxruntime threads per inference call (default: the cores divided among the workers)",
    )
    registry_url: str = Field(
        default="http://127.0.0.1:8081", description="where the registry service answers"
    )
    default_alias: str = Field(default="production", description="the alias served when no version is asked")
    # 1,024, not 64: 100-row requests then share calls (each call is a thread hand-off, which cost more than
    # the rows); measured here, 100-row requests at c=16 went from 896-961 to 1,292-1,334 a second, 1-row
    # requests at c=64 (batches of at most ~32 rows either way) did not move.
    max_batch_size: int = Field(default=1024, ge=1, description="most rows merged into one inference call")
    max_batch_wait_ms: float = Field(default=2.0, ge=0, description="longest a request waits for company")
    max_concurrent_batches: int = Field(default=1, ge=1, description="inference calls per version at once")
    max_loaded_models: int = Field(default=8, ge=1, description="model versions kept in memory")
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=1, description="largest request body")
    fast_lane: bool = Field(
        default=True,
        description="answer the inference routes in uvicorn's protocol, below ASGI (off: through ASGI)",
    )
    max_shadows_in_flight: int = Field(
        default=256, ge=0, description="shadow requests answered at once; beyond, mirroring is skipped"
    )
    prediction_log_capacity: int = Field(default=100_000, ge=1, description="predictions buffered for Kafka")
    prediction_log_batch_size: int = Field(default=2000, ge=1, description="predictions per logged event")
