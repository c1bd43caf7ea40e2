"""Runs one training job from data to a reported run: validate, train, convert, check parity, evaluate,
profile, gate, report, and announce the result with run-completed.

Every job is a run in the registry. Whatever happens, the job ends succeeded or failed with its reason,
and a run-completed event (success or failure) is written in the same transaction as the job's status.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict
from typing import Any

import asyncpg

from services.trainer import repository
from services.trainer.dataset import DatasetError, fingerprint, load_table, validate_for_training
from services.trainer.evaluation import evaluate, evaluate_onnx
from services.trainer.onnx_export import check_parity, to_onnx
from services.trainer.pipeline import train
from services.trainer.profile import check_against_profile, reference_profile
from services.trainer.registry_client import RegistryClient, acting_for
from services.trainer.report import GateDecision, validation_report
from services.trainer.schemas import Job, JobRequest, PromotionPolicy
from services.trainer.service import EVENT_SOURCE, JOB_REQUEST_TAG
from services.trainer.spec import LOWER_IS_BETTER
from shared.artifacts import ArtifactNotFound, ArtifactStore, InvalidArtifactKey
from shared.events import CloudEvent, RunCompleted, Topic
from shared.heartbeat import heartbeat
from shared.outbox import enqueue_event

log = logging.getLogger(__name__)


class JobFailed(Exception):
    """The job cannot produce a model; `problems` lists every reason found (data validation)."""

    def __init__(self, reason: str, problems: list[str] | None = None) -> None:
        super().__init__(reason)
        self.problems = problems or []


class JobRunner:
    def __init__(
        self,
        database: asyncpg.Pool,
        artifacts: ArtifactStore,
        registry: RegistryClient,
        on_events: Any,
        heartbeat_seconds: float,
    ) -> None:
        self.database = database
        self.artifacts = artifacts
        self.registry = registry
        self.on_events = on_events
        self.heartbeat_seconds = heartbeat_seconds

    async def run(self, job: Job) -> None:
        """Run a claimed job to its end; never raises for the job's own failures."""
        request = job.request
        run_id: str | None = job.run_id
        acting = acting_for.set(job.workspace)
        try:
            async with heartbeat(lambda: self._beat(job.id), self.heartbeat_seconds, f"heartbeat:{job.id}"):
                if run_id is None:
                    run_id = await self.registry.create_run(
                        request.experiment or request.model_name,
                        f"train-{job.id[:8]}",
                        tags={
                            "flywheel.job_id": job.id,
                            "flywheel.reason": job.reason,
                            JOB_REQUEST_TAG: request.model_dump_json(),
                        },
                        dataset_fingerprint=None,
                    )
                    async with self.database.acquire() as connection:
                        await repository.set_run(connection, job.id, run_id)
                completed, result = await self._train(job, run_id)
        except JobFailed as failure:
            await self.fail(job, run_id, str(failure), failure.problems)
        except Exception as error:  # a bug or an unavailable dependency: the job must not stay running
            log.exception("training job crashed", extra={"job_id": job.id})
            await self.fail(job, run_id, f"{type(error).__name__}: {error}", [])
        else:
            await self._succeed(job, completed, result)
        finally:
            acting_for.reset(acting)

    async def _progress(self, job_id: str, stage: str, progress: float) -> None:
        async with self.database.acquire() as connection:
            await repository.report_progress(connection, job_id, stage, progress)

    async def _train(self, job: Job, run_id: str) -> tuple[RunCompleted, dict[str, Any]]:
        request = job.request
        await self._progress(job.id, "loading data", 0.05)
        data = await self._read(request.dataset_uri, "dataset")
        dataset_sha256 = fingerprint(data)
        try:
            frame = await asyncio.to_thread(load_table, data, request.dataset_uri)
        except DatasetError as error:
            raise JobFailed(str(error)) from error

        await self._progress(job.id, "validating data", 0.1)
        problems = validate_for_training(frame, request)
        champion = None
        if request.promotion is not None:
            champion = await self.registry.version_by_alias(
                request.model_name, request.promotion.champion_alias
            )
        previous_profile = await self._previous_profile(request.model_name, champion)
        if previous_profile is not None and not problems:
            problems += check_against_profile(frame, previous_profile, request)
        if problems:
            raise JobFailed(f"data validation failed with {len(problems)} problem(s)", problems)
        await self.registry.log(
            run_id, params=_params_of(request), tags={"flywheel.dataset_sha256": dataset_sha256}
        )

        await self._progress(job.id, "training", 0.2)
        started = time.perf_counter()
        trained = await asyncio.to_thread(train, request, frame)
        await self._progress(job.id, "converting to ONNX", 0.6)
        convert_started = time.perf_counter()
        onnx_model = await asyncio.to_thread(
            to_onnx,
            trained.pipeline,
            trained.holdout_features,
            trained.feature_columns,
            trained.categorical_columns,
        )
        conversion_seconds = time.perf_counter() - convert_started
        await self._progress(job.id, "checking parity", 0.7)
        parity = await asyncio.to_thread(
            check_parity, trained.pipeline, onnx_model, trained.holdout_features, request.task, None
        )
        if not parity.passed:
            raise JobFailed(
                f"ONNX and scikit-learn disagree on the holdout: max |difference| {parity.max_abs_diff:.3g} "
                f"> tolerance {parity.tolerance:.3g}"
            )

        await self._progress(job.id, "evaluating", 0.75)
        metrics = evaluate(
            request.task, trained.holdout_target, trained.holdout_predictions, trained.holdout_probabilities
        )
        gate = await self._gate(request, champion, onnx_model, trained, metrics)
        await self._progress(job.id, "profiling", 0.8)
        # The model's outputs on rows it was not fitted on: what live traffic looks like when nothing drifts.
        profile = reference_profile(
            frame, request, trained.holdout_predictions, trained.holdout_probabilities
        )

        await self._progress(job.id, "reporting", 0.9)
        html, report = validation_report(
            profile=profile,
            metrics=metrics,
            parity=parity,
            gate=gate,
            request=request.model_dump(mode="json"),
        )
        model_artifact = await self.registry.upload_artifact(
            run_id, "model/model.onnx", onnx_model, "application/octet-stream"
        )
        profile_artifact = await self.registry.upload_artifact(
            run_id, "reference_profile.json", json.dumps(profile).encode(), "application/json"
        )
        await self.registry.upload_artifact(run_id, "validation_report.html", html.encode(), "text/html")
        await self.registry.upload_artifact(
            run_id, "validation_report.json", json.dumps(report).encode(), "application/json"
        )
        timings = {
            "fit_seconds": trained.fit_seconds,
            "onnx_conversion_seconds": conversion_seconds,
            "total_training_seconds": time.perf_counter() - started,
        }
        await self.registry.log(
            run_id,
            metrics={**metrics, **timings, "parity_max_abs_diff": parity.max_abs_diff},
            params={f"hp.{key}": str(value) for key, value in trained.hyperparameters.items()},
            tags={"flywheel.gate": json.dumps(asdict(gate)) if gate else "none"},
        )
        await self.registry.end_run(run_id, "finished")
        completed = RunCompleted(
            run_id=run_id,
            experiment=request.experiment or request.model_name,
            status="finished",
            model_name=request.model_name,
            metrics=metrics,
            artifact_uri=model_artifact["uri"],
            artifact_sha256=model_artifact["sha256"],
            reference_profile_uri=profile_artifact["uri"],
            dataset_fingerprint=dataset_sha256,
        )
        result = {
            "metrics": metrics,
            "parity": asdict(parity),
            "gate": asdict(gate) if gate else None,
            "timings": timings,
            "model_uri": model_artifact["uri"],
        }
        return completed, result

    async def _gate(
        self,
        request: JobRequest,
        champion: dict[str, Any] | None,
        onnx_model: bytes,
        trained: Any,
        metrics: dict[str, float],
    ) -> GateDecision | None:
        """Champion/challenger on the same holdout: promote only when better by the policy's margin."""
        policy: PromotionPolicy | None = request.promotion
        if policy is None:
            return None
        metric = policy.metric or request.metric
        challenger = metrics[metric]
        champion_value = None
        if champion is not None and champion.get("artifact_uri"):
            champion_model = await self._read(champion["artifact_uri"], "champion model")
            champion_metrics = await asyncio.to_thread(
                evaluate_onnx,
                champion_model,
                trained.holdout_features,
                trained.holdout_target,
                request.task,
                request,
            )
            champion_value = champion_metrics[metric]
        if champion is None or champion_value is None:
            promoted, reason = True, f"no {policy.champion_alias} version to beat"
        else:
            gain = champion_value - challenger if metric in LOWER_IS_BETTER else challenger - champion_value
            promoted = gain >= policy.min_improvement
            reason = (
                f"{metric} {challenger:.4f} vs {champion_value:.4f} (v{champion['version']}): "
                f"{'better' if promoted else 'not better'} by the margin {policy.min_improvement}"
            )
        return GateDecision(
            metric=metric,
            challenger=challenger,
            champion=champion_value,
            champion_version=champion["version"] if champion else None,
            margin=policy.min_improvement,
            promoted=promoted,
            promote_to=policy.promote_to,
            reason=reason,
        )

    async def _previous_profile(
        self, model_name: str, champion: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """The training profile to check new data against: the champion's, else production's, else the
        latest version's; None for a model never trained before."""
        version = (
            champion
            or await self.registry.version_by_alias(model_name, "production")
            or await self.registry.latest_version(model_name)
        )
        uri = version.get("reference_profile_uri") if version else None
        if not uri:
            return None
        profile: dict[str, Any] = json.loads(await self._read(uri, "previous reference profile"))
        return profile

    async def _read(self, uri: str, what: str) -> bytes:
        try:
            return await self.artifacts.get_bytes(self.artifacts.key_from_uri(uri))
        except (InvalidArtifactKey, ArtifactNotFound) as error:
            raise JobFailed(f"{what} {uri!r} cannot be read: {error}") from error

    async def _succeed(self, job: Job, completed: RunCompleted, result: dict[str, Any]) -> None:
        async with self.database.acquire() as connection, connection.transaction():
            await repository.finish_job(
                connection, job.id, status="succeeded", error=None, problems=[], result=result
            )
            await enqueue_event(
                connection,
                Topic.RUN_COMPLETED,
                CloudEvent.wrap(completed, source=EVENT_SOURCE, subject=completed.run_id),
                key=completed.run_id,
            )
        self.on_events()

    async def fail(self, job: Job, run_id: str | None, reason: str, problems: list[str]) -> None:
        """Mark the job and its run failed and announce it; nothing gets registered."""
        if run_id is not None:
            with contextlib.suppress(
                Exception
            ):  # the failure is recorded on the job whatever the registry says
                await self.registry.log(run_id, tags={"flywheel.failure": reason[:8000]})
                await self.registry.end_run(run_id, "failed")
        async with self.database.acquire() as connection, connection.transaction():
            await repository.finish_job(
                connection, job.id, status="failed", error=reason, problems=problems, result=None
            )
            if run_id is not None:
                failed = RunCompleted(
                    run_id=run_id,
                    experiment=job.request.experiment or job.request.model_name,
                    status="failed",
                    model_name=job.request.model_name,
                    failure_reason="; ".join([reason, *problems])[:8000],
                )
                await enqueue_event(
                    connection,
                    Topic.RUN_COMPLETED,
                    CloudEvent.wrap(failed, source=EVENT_SOURCE, subject=run_id),
                    key=run_id,
                )
        self.on_events()
        log.warning("training job failed", extra={"job_id": job.id, "reason": reason, "problems": problems})

    async def _beat(self, job_id: str) -> None:
        async with self.database.acquire() as connection:
            await repository.heartbeat(connection, job_id)


def _params_of(request: JobRequest) -> dict[str, str]:
    fields = request.model_dump(mode="json", exclude={"hyperparameters", "search_space", "promotion"})
    params = {key: value if isinstance(value, str) else json.dumps(value) for key, value in fields.items()}
    params.update(
        {f"hyperparameters.{key}": json.dumps(value) for key, value in request.hyperparameters.items()}
    )
    return params
