"""Experiment tracking: experiments, runs, logging, search, comparison and run artifacts."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterable, AsyncIterator
from datetime import UTC, datetime

import asyncpg

from services.registry import tracking_repository as repository
from services.registry.errors import Conflict, InvalidRequest, NotFound
from services.registry.schemas import (
    Artifact,
    Experiment,
    ExperimentCreate,
    ExperimentPage,
    ExperimentUpdate,
    LogBatch,
    MetricHistory,
    MetricPoint,
    Run,
    RunComparison,
    RunCreate,
    RunPage,
    RunSearch,
    RunUpdate,
)
from services.registry.search import compile_search
from shared.artifacts import ArtifactNotFound, ArtifactStore, InvalidArtifactKey, validate_key
from shared.auth import DEFAULT_WORKSPACE, Principal
from shared.db import Connection
from shared.events import RunCompleted
from shared.pagination import decode_page_token, next_page_token

FINAL_STATUSES = {"finished", "failed", "killed"}
MAX_COMPARED_RUNS = 100


def new_id() -> str:
    return uuid.uuid4().hex


def utc_now() -> datetime:
    return datetime.now(UTC)


class TrackingService:
    def __init__(self, database: asyncpg.Pool, artifacts: ArtifactStore) -> None:
        self.database = database
        self.artifacts = artifacts

    # ------------------------------------------------------------ experiments

    # Every method acts for a principal: it sees and changes only its workspace's experiments and runs
    # (anything else reads as missing), and creates in its home workspace.

    async def create_experiment(self, request: ExperimentCreate, principal: Principal) -> Experiment:
        async with self.database.acquire() as connection:
            created = await repository.insert_experiment(
                connection,
                new_id(),
                request.name,
                request.description,
                request.tags,
                principal.home_workspace,
            )
        if created is None:
            raise Conflict(
                f"an experiment named {request.name!r} exists already (names are unique across workspaces)"
            )
        return created

    async def get_experiment(self, experiment_id: str, principal: Principal) -> Experiment:
        async with self.database.acquire() as connection:
            experiment = await repository.get_experiment(
                connection, experiment_id=experiment_id, workspace=principal.scope
            )
        if experiment is None:
            raise NotFound(f"no experiment with id {experiment_id!r}")
        return experiment

    async def get_experiment_by_name(self, name: str, principal: Principal) -> Experiment:
        async with self.database.acquire() as connection:
            experiment = await repository.get_experiment(connection, name=name, workspace=principal.scope)
        if experiment is None:
            raise NotFound(f"no experiment named {name!r}")
        return experiment

    async def list_experiments(
        self, page_size: int, page_token: str | None, principal: Principal
    ) -> ExperimentPage:
        offset = decode_page_token(page_token)
        async with self.database.acquire() as connection:
            experiments = await repository.list_experiments(
                connection, page_size + 1, offset, principal.scope
            )
        return ExperimentPage(
            experiments=experiments[:page_size],
            next_page_token=next_page_token(offset, page_size, len(experiments)),
        )

    async def update_experiment(
        self, experiment_id: str, request: ExperimentUpdate, principal: Principal
    ) -> Experiment:
        async with self.database.acquire() as connection:
            experiment = await repository.update_experiment(
                connection, experiment_id, request.description, request.tags, principal.scope
            )
        if experiment is None:
            raise NotFound(f"no experiment with id {experiment_id!r}")
        return experiment

    async def delete_experiment(self, experiment_id: str, principal: Principal) -> None:
        """Delete the experiment with its runs; their stored artifacts stay in the artifact store."""
        async with self.database.acquire() as connection, connection.transaction():
            if not await repository.delete_experiment(connection, experiment_id, principal.scope):
                raise NotFound(f"no experiment with id {experiment_id!r}")

    # ------------------------------------------------------------ runs

    async def create_run(self, request: RunCreate, principal: Principal) -> Run:
        """Start a run (status running) in an experiment named by id, or by name (created if missing)."""
        if (request.experiment_id is None) == (request.experiment_name is None):
            raise InvalidRequest("give exactly one of experiment_id and experiment_name")
        run_id = new_id()
        async with self.database.acquire() as connection:
            if request.experiment_id is not None:  # the common case: one statement, no transaction
                run = await self._insert_run(connection, run_id, request.experiment_id, request, principal)
                if run is None:
                    raise NotFound(f"no experiment with id {request.experiment_id!r}")
                return run
            async with connection.transaction():
                assert request.experiment_name is not None
                experiment_id = await self._experiment_named(
                    connection, request.experiment_name, principal.scope, principal.home_workspace
                )
                run = await self._insert_run(connection, run_id, experiment_id, request, principal)
        assert run is not None  # the experiment exists within this transaction, and the id is new
        return run

    @staticmethod
    async def _insert_run(
        connection: Connection, run_id: str, experiment_id: str, request: RunCreate, principal: Principal
    ) -> Run | None:
        return await repository.insert_run(
            connection,
            run_id=run_id,
            experiment_id=experiment_id,
            name=request.name or f"run-{run_id[:8]}",
            status="running",
            start_time=request.start_time or utc_now(),
            tags=request.tags,
            dataset_fingerprint=request.dataset_fingerprint,
            code_version=request.code_version,
            workspace=principal.scope,
        )

    @staticmethod
    async def _experiment_named(
        connection: Connection, name: str, scope: str | None, home_workspace: str
    ) -> str:
        """The id of the experiment called `name` in `scope` (None: any workspace), created in
        `home_workspace` when missing (safe when two runs race); Conflict when another workspace has it."""
        experiment = await repository.get_experiment(connection, name=name, workspace=scope)
        if experiment is None:
            experiment = await repository.insert_experiment(
                connection, new_id(), name, "", {}, home_workspace
            ) or await repository.get_experiment(connection, name=name, workspace=scope)
        if experiment is None:
            raise Conflict(f"the experiment name {name!r} is taken by another workspace")
        return experiment.id

    @staticmethod
    async def _check_run(connection: Connection, run_id: str, principal: Principal) -> None:
        """NotFound unless the run exists in the principal's workspace."""
        if principal.scope is None:
            return
        if await repository.run_workspace(connection, run_id) != principal.scope:
            raise NotFound(f"no run with id {run_id!r}")

    async def get_run(self, run_id: str, principal: Principal) -> Run:
        async with self.database.acquire() as connection:
            await self._check_run(connection, run_id, principal)
            run = await repository.get_run(connection, run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id!r}")
        return run

    async def update_run(self, run_id: str, request: RunUpdate, principal: Principal) -> Run:
        end_time = request.end_time
        if end_time is None and request.status in FINAL_STATUSES:
            end_time = utc_now()
        async with self.database.acquire() as connection:
            run = await repository.update_run(
                connection, run_id, request.status, end_time, request.name, principal.scope
            )
        if run is None:
            raise NotFound(f"no run with id {run_id!r}")
        return run

    async def delete_run(self, run_id: str, principal: Principal) -> None:
        async with self.database.acquire() as connection, connection.transaction():
            await self._check_run(connection, run_id, principal)
            if not await repository.delete_run(connection, run_id):
                raise NotFound(f"no run with id {run_id!r}")

    async def log_batch(self, run_id: str, batch: LogBatch, principal: Principal) -> None:
        """Store params, metric points and tags together, or nothing: a param logged before with another
        value is a 409 naming it, and the whole batch is refused."""
        offered: dict[str, str] = {}
        for param in batch.params:
            if offered.setdefault(param.key, param.value) != param.value:
                raise InvalidRequest(f"param {param.key!r} appears twice in the batch with different values")
        async with self.database.acquire() as connection:
            try:
                await repository.log_batch(
                    connection, run_id, batch.params, batch.metrics, batch.tags, utc_now(), principal.scope
                )
            except repository.RunNotFound as error:
                raise NotFound(str(error)) from error
            except repository.ParamConflict as error:
                raise Conflict(str(error)) from error

    async def record_completed_run(self, completed: RunCompleted) -> None:
        """Make tracking agree with a run-completed event: the run exists (created, with its experiment and
        metrics, when the producer never logged it here) and has its final status. Safe to repeat."""
        async with self.database.acquire() as connection, connection.transaction():
            if not await repository.lock_run(connection, completed.run_id):
                # The producer (the trainer, for a job of its workspace) logged no run here: the
                # experiment is found in any workspace, or created in the default one.
                experiment_id = await self._experiment_named(
                    connection, completed.experiment, None, DEFAULT_WORKSPACE
                )
                await repository.insert_run(
                    connection,
                    run_id=completed.run_id,
                    experiment_id=experiment_id,
                    name=f"run-{completed.run_id[:8]}",
                    status="running",
                    start_time=utc_now(),
                    tags={},
                    dataset_fingerprint=completed.dataset_fingerprint,
                    code_version=None,
                )
                points = [MetricPoint(key=key, value=value) for key, value in completed.metrics.items()]
                await repository.log_batch(connection, completed.run_id, [], points, {}, utc_now(), None)
            await repository.finish_run(
                connection, completed.run_id, completed.status, utc_now(), completed.dataset_fingerprint
            )

    async def metric_history(self, run_id: str, key: str, principal: Principal) -> MetricHistory:
        async with self.database.acquire() as connection:
            await self._check_run(connection, run_id, principal)
            points = await repository.metric_history(connection, run_id, key)
            if not points and await repository.get_run(connection, run_id) is None:
                raise NotFound(f"no run with id {run_id!r}")
        return MetricHistory(run_id=run_id, key=key, points=points)

    async def search_runs(self, search: RunSearch, principal: Principal) -> RunPage:
        """Runs across experiments matching a filter, ordered and paginated. A malformed filter raises
        FilterSyntaxError (position and token of the mistake)."""
        offset = decode_page_token(search.page_token)
        compiled = compile_search(
            search.filter,
            search.order_by,
            first_placeholder=3,
            within_experiments=bool(search.experiment_ids),
        )
        where, args = compiled.where, list(compiled.args)
        if search.experiment_ids:
            args.append(search.experiment_ids)
            where = f"({where}) AND r.experiment_id = ANY(${len(args) + 2}::text[])"
        if principal.scope is not None:
            args.append(principal.scope)
            where = (
                f"({where}) AND r.experiment_id IN "
                f"(SELECT id FROM experiments WHERE workspace = ${len(args) + 2})"
            )
        async with self.database.acquire() as connection:
            runs = await repository.fetch_runs(
                connection, where, compiled.order_by, args, search.max_results + 1, offset
            )
        return RunPage(
            runs=runs[: search.max_results],
            next_page_token=next_page_token(offset, search.max_results, len(runs)),
        )

    async def compare_runs(self, run_ids: list[str], principal: Principal) -> RunComparison:
        """Runs side by side: every param and last metric value, and which params differ."""
        if not 1 <= len(run_ids) <= MAX_COMPARED_RUNS:
            raise InvalidRequest(f"compare between 1 and {MAX_COMPARED_RUNS} runs, got {len(run_ids)}")
        async with self.database.acquire() as connection:
            found = {run.id: run for run in await repository.get_runs(connection, run_ids)}
            if principal.scope is not None:
                visible = await repository.runs_in_workspace(connection, list(found), principal.scope)
                found = {run_id: run for run_id, run in found.items() if run_id in visible}
        missing = [run_id for run_id in run_ids if run_id not in found]
        if missing:
            raise NotFound(f"no run with id {missing[0]!r}")
        runs = [found[run_id] for run_id in run_ids]
        param_keys = sorted({key for run in runs for key in run.params})
        return RunComparison(
            runs=[repository.compared(run) for run in runs],
            param_keys=param_keys,
            metric_keys=sorted({key for run in runs for key in run.metrics}),
            differing_params=[key for key in param_keys if len({run.params.get(key) for run in runs}) > 1],
        )

    # ------------------------------------------------------------ artifacts

    @staticmethod
    def artifact_key(run_id: str, path: str) -> str:
        try:
            return validate_key(f"runs/{run_id}/artifacts/{path}")
        except InvalidArtifactKey as error:
            raise InvalidRequest(f"artifact path {path!r} is not a relative path inside the run") from error

    async def upload_artifact(
        self, run_id: str, path: str, content: AsyncIterable[bytes], content_type: str, principal: Principal
    ) -> Artifact:
        key = self.artifact_key(run_id, path)
        await self.get_run(run_id, principal)
        stored = await self.artifacts.put_stream(key, content, content_type)
        assert stored.sha256 is not None
        artifact = Artifact(
            run_id=run_id,
            path=path,
            uri=stored.uri,
            size=stored.size,
            sha256=stored.sha256,
            content_type=content_type,
            created_at=utc_now(),
        )
        async with self.database.acquire() as connection:
            await repository.upsert_artifact(connection, artifact)
        return artifact

    async def list_artifacts(self, run_id: str, principal: Principal) -> list[Artifact]:
        async with self.database.acquire() as connection:
            await self._check_run(connection, run_id, principal)
            artifacts = await repository.list_artifacts(connection, run_id)
            if not artifacts and await repository.get_run(connection, run_id) is None:
                raise NotFound(f"no run with id {run_id!r}")
        return artifacts

    async def open_artifact(
        self, run_id: str, path: str, principal: Principal
    ) -> tuple[Artifact, AsyncIterator[bytes]]:
        async with self.database.acquire() as connection:
            await self._check_run(connection, run_id, principal)
            artifact = await repository.get_artifact(connection, run_id, path)
        if artifact is None:
            raise NotFound(f"run {run_id!r} has no artifact {path!r}")
        try:
            await self.artifacts.stat(self.artifact_key(run_id, path))
        except ArtifactNotFound as error:
            raise NotFound(f"artifact {path!r} of run {run_id!r} is gone from the artifact store") from error
        return artifact, self.artifacts.stream(self.artifact_key(run_id, path))
