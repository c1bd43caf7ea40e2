"""The events services exchange over Kafka: CloudEvents 1.0 JSON envelopes with one typed payload per topic.

An event's `type` names its payload and schema version (`io.flywheel.model.registered.v1`); a
breaking change to a payload gets a new type (`.v2`) so old and new consumers can coexist.
"""

from __future__ import annotations

import base64
import builtins
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, Self, TypeVar
from uuid import uuid4

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StringConstraints,
    ValidationError,
    model_validator,
)


class Topic(StrEnum):
    """The platform's Kafka topics. Each has a dead-letter twin, see `dead_letter_topic`."""

    RUN_COMPLETED = "run-completed"
    MODEL_REGISTERED = "model-registered"
    MODEL_PROMOTED = "model-promoted"
    TRAFFIC_POLICY_CHANGED = "traffic-policy-changed"
    PREDICTION_LOGGED = "prediction-logged"
    GROUND_TRUTH = "ground-truth"
    DRIFT_DETECTED = "drift-detected"
    RETRAIN_REQUESTED = "retrain-requested"
    TRAINING_JOBS = "training-jobs"


def dead_letter_topic(topic: str) -> str:
    """Where a consumer of `topic` puts what it could not process."""
    return f"{topic}.dlq"


class InvalidEvent(ValueError):
    """Bytes that are not a well-formed Flywheel CloudEvent; retrying cannot fix them."""


def utc_now() -> datetime:
    return datetime.now(UTC)


Sha256 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=256)]
FeatureValue = float | int | str | bool | None


class EventPayload(BaseModel):
    """Base of every event's `data`. Subclasses name their CloudEvents type and home topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_type: ClassVar[str]
    topic: ClassVar[Topic | None]


# ---------------------------------------------------------------- payloads, by topic


class RunCompleted(EventPayload):
    """trainer -> registry: a training run finished, successfully or not."""

    event_type: ClassVar[str] = "io.flywheel.run.completed.v1"
    topic: ClassVar[Topic | None] = Topic.RUN_COMPLETED

    run_id: Name
    experiment: Name
    status: Literal["finished", "failed"]
    model_name: Name | None = Field(default=None, description="register the model under this name")
    metrics: dict[str, float] = Field(default_factory=dict)
    artifact_uri: str | None = None
    artifact_sha256: Sha256 | None = None
    reference_profile_uri: str | None = None
    dataset_fingerprint: Sha256 | None = None
    failure_reason: str | None = None

    @model_validator(mode="after")
    def _outcome_is_complete(self) -> Self:
        if self.status == "finished" and not (self.artifact_uri and self.artifact_sha256):
            raise ValueError("a finished run needs artifact_uri and artifact_sha256")
        if self.status == "failed" and not self.failure_reason:
            raise ValueError("a failed run needs a failure_reason")
        return self


class TensorSpec(BaseModel):
    """One model input or output, in Open Inference Protocol terms (-1 is a dynamic dimension)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Name
    datatype: Literal[
        "BOOL",
        "UINT8",
        "UINT16",
        "UINT32",
        "UINT64",
        "INT8",
        "INT16",
        "INT32",
        "INT64",
        "FP16",
        "FP32",
        "FP64",
        "BYTES",
    ]
    shape: list[int]


class ModelSignature(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    inputs: list[TensorSpec]
    outputs: list[TensorSpec]


class ModelRegistered(EventPayload):
    """registry -> everyone: a new model version exists."""

    event_type: ClassVar[str] = "io.flywheel.model.registered.v1"
    topic: ClassVar[Topic | None] = Topic.MODEL_REGISTERED

    name: Name
    version: int = Field(ge=1)
    artifact_uri: str
    artifact_sha256: Sha256
    signature: ModelSignature
    reference_profile_uri: str | None = None
    source_run_id: str | None = None


class ModelPromoted(EventPayload):
    """registry -> serving, batch, monitor: an alias now points at a version."""

    event_type: ClassVar[str] = "io.flywheel.model.promoted.v1"
    topic: ClassVar[Topic | None] = Topic.MODEL_PROMOTED

    name: Name
    alias: Name
    version: int = Field(ge=1)
    previous_version: int | None = Field(default=None, ge=1)


# Alias moves and deletions share model-promoted, keyed by the model: a consumer sees them in the order the
# registry made them (a deleted alias set again, a model deleted and made again).


class AliasDeleted(EventPayload):
    """registry -> serving, batch, monitor: an alias points at no version any more."""

    event_type: ClassVar[str] = "io.flywheel.model.alias-deleted.v1"
    topic: ClassVar[Topic | None] = Topic.MODEL_PROMOTED

    name: Name
    alias: Name
    previous_version: int = Field(ge=1)


class VersionsDeleted(EventPayload):
    """registry -> serving, batch, monitor: versions of a model are gone, or the whole model
    (`model_deleted`: its aliases and traffic policy with it)."""

    event_type: ClassVar[str] = "io.flywheel.model.versions-deleted.v1"
    topic: ClassVar[Topic | None] = Topic.MODEL_PROMOTED

    name: Name
    versions: list[int]
    model_deleted: bool = False


AliasName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")]


class TrafficPolicy(BaseModel):
    """How serving shares a model's requests between its aliases: a weighted split (percentages that sum
    to 100, e.g. 90 `production`, 10 `canary`) and shadows that get a copy of every request, whose
    answers are logged but never returned. Requests for an explicit version bypass the policy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    split: dict[AliasName, int] = Field(min_length=1, examples=[{"production": 90, "canary": 10}])
    shadow: list[AliasName] = Field(default_factory=list, examples=[["staging"]])

    @model_validator(mode="after")
    def _weights_are_percentages(self) -> Self:
        if any(weight < 0 or weight > 100 for weight in self.split.values()):
            raise ValueError(f"split weights are percentages from 0 to 100, got {self.split}")
        if sum(self.split.values()) != 100:
            raise ValueError(f"split weights must sum to 100, they sum to {sum(self.split.values())}")
        if both := sorted(set(self.split) & set(self.shadow)):
            raise ValueError(f"alias(es) {both} cannot be both in the split and a shadow")
        if len(set(self.shadow)) != len(self.shadow):
            raise ValueError(f"shadow aliases repeat: {self.shadow}")
        return self

    def aliases(self) -> list[str]:
        return [*self.split, *self.shadow]


class TrafficPolicyChanged(EventPayload):
    """registry -> serving: a model's traffic policy was set (or removed: `policy` is None)."""

    event_type: ClassVar[str] = "io.flywheel.model.traffic-policy-changed.v1"
    topic: ClassVar[Topic | None] = Topic.TRAFFIC_POLICY_CHANGED

    name: Name
    policy: TrafficPolicy | None


class PredictionRecord(BaseModel):
    """One prediction (one row of a request): what went in, what came out, and which version answered.
    The row view of a `PredictionLogged` batch (see `PredictionLogged.records`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Name
    model: Name
    version: int = Field(ge=1)
    features: dict[str, FeatureValue] | list[FeatureValue]
    outputs: dict[str, Any]
    latency_ms: float = Field(ge=0)
    timestamp: datetime = Field(default_factory=utc_now)
    alias: str | None = Field(default=None, description="the alias that routed the request, if any")
    shadow: bool = Field(default=False, description="a shadow's answer: logged, never returned")


class LoggedRequest(BaseModel):
    """One request's rows within a `PredictionLogged` batch."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    request_id: Name
    rows: int = Field(ge=1)
    first_row: int = Field(
        default=0, ge=0, description="where this part starts, for a request too large for one batch"
    )
    latency_ms: float = Field(ge=0)
    timestamp: datetime


class PredictionLogged(EventPayload):
    """serving and batch -> monitor: predictions of one model version, in columns. Row i of every feature
    and output is one prediction; `requests` says, in row order, which request each run of rows came
    from. Columns keep logging cheap at thousands of predictions a second, and statistics on them are
    whole-array operations. Row `k` of a request has the request id `<id>` for k = 0, else `<id>:<k>`."""

    event_type: ClassVar[str] = "io.flywheel.prediction.logged.v2"
    topic: ClassVar[Topic | None] = Topic.PREDICTION_LOGGED

    model: Name
    version: int = Field(ge=1)
    alias: str | None = Field(default=None, description="the alias that routed these requests, if any")
    shadow: bool = Field(default=False, description="a shadow's answers: logged, never returned")
    requests: list[LoggedRequest] = Field(min_length=1)
    features: dict[str, list[FeatureValue]] | list[list[FeatureValue]] = Field(
        description="one column per named feature, or one list of values per row"
    )
    outputs: dict[str, list[Any]] = Field(description="one value (or list of values) per row, per output")

    @model_validator(mode="after")
    def _columns_have_a_value_per_row(self) -> Self:
        rows = self.rows
        columns = self.features.items() if isinstance(self.features, dict) else [("features", self.features)]
        for name, column in [*columns, *self.outputs.items()]:
            if len(column) != rows:
                raise ValueError(f"{name!r} has {len(column)} values; the requests have {rows} rows")
        return self

    @property
    def rows(self) -> int:
        return sum(request.rows for request in self.requests)

    def records(self) -> list[PredictionRecord]:
        """The batch as one record per prediction."""
        records = []
        row = 0
        for request in self.requests:
            for offset in range(request.first_row, request.first_row + request.rows):
                features: dict[str, FeatureValue] | list[FeatureValue] = (
                    {name: column[row] for name, column in self.features.items()}
                    if isinstance(self.features, dict)
                    else self.features[row]
                )
                records.append(
                    PredictionRecord(
                        request_id=request.request_id if offset == 0 else f"{request.request_id}:{offset}",
                        model=self.model,
                        version=self.version,
                        features=features,
                        outputs={name: values[row] for name, values in self.outputs.items()},
                        latency_ms=request.latency_ms,
                        timestamp=request.timestamp,
                        alias=self.alias,
                        shadow=self.shadow,
                    )
                )
                row += 1
        return records


class GroundTruth(EventPayload):
    """producers -> monitor: the true label of an earlier request, once it is known."""

    event_type: ClassVar[str] = "io.flywheel.ground-truth.v1"
    topic: ClassVar[Topic | None] = Topic.GROUND_TRUTH

    request_id: Name
    label: float | int | str | bool
    model: Name | None = None
    observed_at: datetime = Field(default_factory=utc_now)


class FeatureDrift(BaseModel):
    """The verdict of one statistical test on one feature (or on the model's output)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    feature: Name
    method: Name = Field(description="e.g. ks, chi2, z, wasserstein, jensenshannon, psi")
    statistic: float
    threshold: float
    drifted: bool
    p_value: float | None = None


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class DriftDetected(EventPayload):
    """monitor -> subscribers: a window of live traffic differs from the training reference."""

    event_type: ClassVar[str] = "io.flywheel.drift.detected.v1"
    topic: ClassVar[Topic | None] = Topic.DRIFT_DETECTED

    model: Name
    version: int = Field(ge=1)
    window_start: datetime
    window_end: datetime
    window_rows: int = Field(ge=0)
    severity: Severity
    dataset_drift: bool
    features: list[FeatureDrift]
    prediction_drift: FeatureDrift | None = None


class RetrainRequested(EventPayload):
    """monitor or users -> trainer: train a new version of a model."""

    event_type: ClassVar[str] = "io.flywheel.retrain.requested.v1"
    topic: ClassVar[Topic | None] = Topic.RETRAIN_REQUESTED

    model: Name
    reason: str = Field(min_length=1)
    requested_by: Name
    dataset_uri: str | None = Field(default=None, description="data to train on; default: the last run's")
    trigger_event_id: str | None = Field(default=None, description="the drift alert that caused it")


class TrainingJobQueued(EventPayload):
    """trainer -> trainer replicas: a training job is waiting; the consumer group gives it to one replica."""

    event_type: ClassVar[str] = "io.flywheel.training-job.queued.v1"
    topic: ClassVar[Topic | None] = Topic.TRAINING_JOBS

    job_id: Name
    model_name: Name


class DeadLetter(EventPayload):
    """consumer -> `<topic>.dlq`: a message it could not process, kept whole with the reason."""

    event_type: ClassVar[str] = "io.flywheel.dead-letter.v1"
    topic: ClassVar[Topic | None] = None  # published to the dead-letter twin of `source_topic`

    source_topic: str
    partition: int | None = None
    offset: int | None = None
    key: str | None = None
    consumer_group: str
    error: str
    attempts: int = Field(ge=0)
    value: str
    value_encoding: Literal["utf-8", "base64"]

    @classmethod
    def of_raw(cls, raw: bytes, **fields: Any) -> DeadLetter:
        """Keep the original bytes readable when they are text, intact when they are not."""
        try:
            return cls(value=raw.decode("utf-8"), value_encoding="utf-8", **fields)
        except UnicodeDecodeError:
            return cls(value=base64.b64encode(raw).decode("ascii"), value_encoding="base64", **fields)

    def raw_value(self) -> bytes:
        return self.value.encode() if self.value_encoding == "utf-8" else base64.b64decode(self.value)


# Every payload class defined above, by its event type (a new payload cannot be forgotten here).
PAYLOAD_TYPES: dict[str, type[EventPayload]] = {
    payload.event_type: payload for payload in EventPayload.__subclasses__()
}

PayloadT = TypeVar("PayloadT", bound=EventPayload)


class CloudEvent(BaseModel):
    """A CloudEvents 1.0 envelope in structured JSON mode; extension attributes are kept."""

    model_config = ConfigDict(extra="allow", frozen=True)

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(default_factory=lambda: str(uuid4()), min_length=1)
    source: str = Field(min_length=1, description="URI-reference of the producer, e.g. /flywheel/registry")
    type: str = Field(min_length=1)
    time: datetime = Field(default_factory=utc_now)
    subject: str | None = None
    datacontenttype: Literal["application/json"] = "application/json"
    data: dict[str, Any]

    _payload: EventPayload | None = PrivateAttr(default=None)

    @classmethod
    def wrap(cls, payload: EventPayload, *, source: str, subject: str | None = None) -> CloudEvent:
        event = cls(
            source=source, type=payload.event_type, subject=subject, data=payload.model_dump(mode="json")
        )
        event._payload = payload
        return event

    def payload(self) -> EventPayload:
        """The typed payload, validated once against the schema its `type` names."""
        if self._payload is None:
            payload_type = PAYLOAD_TYPES.get(self.type)
            if payload_type is None:
                raise InvalidEvent(f"unknown event type {self.type!r}; known: {sorted(PAYLOAD_TYPES)}")
            try:
                self._payload = payload_type.model_validate(self.data)
            except ValidationError as error:
                raise InvalidEvent(f"{self.type} data does not match its schema: {error}") from error
        return self._payload

    def payload_as(self, payload_type: builtins.type[PayloadT]) -> PayloadT:  # `type` is a field here
        """The payload, checked to be of the type this consumer handles."""
        payload = self.payload()
        if not isinstance(payload, payload_type):
            raise InvalidEvent(f"expected a {payload_type.event_type} event, got {self.type}")
        return payload

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()

    @staticmethod
    def unchecked_json(
        payload_type: builtins.type[EventPayload],
        data: dict[str, Any],
        *,
        source: str,
        subject: str | None = None,
    ) -> bytes:
        """The JSON of an event whose `data` the caller vouches for, built without validating it: for a
        hot path where validating every record again would cost more than producing it. Its callers'
        tests hold `data` to the payload's schema (and consumers validate it as always). numpy arrays in
        `data` are written as lists."""
        envelope = {
            "specversion": "1.0",
            "id": str(uuid4()),
            "source": source,
            "type": payload_type.event_type,
            "time": utc_now(),
            "datacontenttype": "application/json",
            "data": data,
        }
        if subject is not None:
            envelope["subject"] = subject
        return orjson.dumps(envelope, option=orjson.OPT_SERIALIZE_NUMPY)

    @classmethod
    def from_json(cls, raw: bytes) -> CloudEvent:
        """Parse and validate envelope and payload; InvalidEvent says what is wrong."""
        try:
            event = cls.model_validate_json(raw)
        except ValidationError as error:
            raise InvalidEvent(f"not a CloudEvents 1.0 JSON envelope: {error}") from error
        event.payload()
        return event
