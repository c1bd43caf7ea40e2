"""Serving's model store: versions load once with their checksum verified, aliases switch only after the
new version is warm, and memory holds a bounded number of versions (never one an alias points at)."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import numpy as np
import pytest

from services.serving.models import ModelStore
from shared.artifacts import FilesystemArtifactStore
from shared.events import ModelSignature, TensorSpec
from shared.model_versions import ModelNotFound, ModelUnavailable, VersionRecord
from tests.models import tiny_classifier_onnx

SIGNATURE = ModelSignature(
    inputs=[TensorSpec(name="X", datatype="FP32", shape=[-1, 4])],
    outputs=[
        TensorSpec(name="label", datatype="INT64", shape=[-1]),
        TensorSpec(name="probabilities", datatype="FP32", shape=[-1, 2]),
    ],
)


class Registry:
    """Stands in for the registry's answers: versions 1-3 of 'credit', production -> 1."""

    def __init__(self, uri: str, sha256: str) -> None:
        self.aliases = {("credit", "production"): 1}
        self.uri, self.sha256 = uri, sha256
        self.lookups = 0

    async def describe(self, name: str, version: int | None, alias: str | None) -> VersionRecord | None:
        self.lookups += 1
        if name != "credit":
            return None
        if version is None:
            version = self.aliases.get((name, alias or ""))
            if version is None:
                return None
        if version > 3:
            return None
        return VersionRecord(name, version, self.uri, self.sha256, SIGNATURE)


@pytest.fixture
async def setup(tmp_path: Path) -> tuple[FilesystemArtifactStore, Registry]:
    store = FilesystemArtifactStore(tmp_path)
    await store.start()
    stored = await store.put_bytes("models/credit/model.onnx", tiny_classifier_onnx())
    return store, Registry(stored.uri, hashlib.sha256(tiny_classifier_onnx()).hexdigest())


def features(rows: int) -> dict[str, np.ndarray]:
    return {"X": np.random.default_rng(0).normal(size=(rows, 4)).astype(np.float32)}


async def test_the_production_version_loads_once_and_answers(
    setup: tuple[FilesystemArtifactStore, Registry],
) -> None:
    store, registry = setup
    models = ModelStore(registry.describe, store)
    model = await models.resolve("credit")
    again = await models.resolve("credit")
    assert model is again
    assert registry.lookups == 1
    outputs = await model.predict(features(3))
    assert outputs["label"].shape == (3,)
    np.testing.assert_allclose(outputs["probabilities"].sum(axis=1), 1, rtol=1e-5)
    await models.close()


async def test_unknown_models_versions_and_aliases_are_not_found(
    setup: tuple[FilesystemArtifactStore, Registry],
) -> None:
    store, registry = setup
    models = ModelStore(registry.describe, store)
    with pytest.raises(ModelNotFound, match="no alias 'canary'"):
        await models.resolve("credit", alias="canary")
    with pytest.raises(ModelNotFound, match="no version 9"):
        await models.resolve("credit", version=9)
    with pytest.raises(ModelNotFound):
        await models.resolve("fraud")


async def test_a_file_that_does_not_match_its_checksum_is_not_served(
    setup: tuple[FilesystemArtifactStore, Registry],
) -> None:
    store, registry = setup
    registry.sha256 = "0" * 64
    with pytest.raises(ModelUnavailable, match="the registry recorded 0000"):
        await ModelStore(registry.describe, store).resolve("credit")


async def test_promotion_switches_only_after_loading_and_in_flight_requests_finish(
    setup: tuple[FilesystemArtifactStore, Registry],
) -> None:
    store, registry = setup
    models = ModelStore(registry.describe, store)
    first = await models.resolve("credit")
    in_flight = [asyncio.ensure_future(first.predict(features(2))) for _ in range(20)]
    await models.promote("credit", "production", 2)
    assert (await models.resolve("credit")).version == 2
    answers = await asyncio.gather(*in_flight)
    assert [len(answer["label"]) for answer in answers] == [2] * 20
    assert models.aliases_of("credit") == {"production": 2}
    await models.close()


async def test_memory_holds_at_most_max_loaded_versions_and_keeps_aliased_ones(
    setup: tuple[FilesystemArtifactStore, Registry],
) -> None:
    store, registry = setup
    models = ModelStore(registry.describe, store, max_loaded=2)
    await models.resolve("credit")  # v1, production
    await models.resolve("credit", version=2)
    await models.resolve("credit", version=3)
    assert models.loaded_versions() == [("credit", 1), ("credit", 3)]
    await models.close()


async def test_concurrent_requests_for_a_cold_version_share_one_load(
    setup: tuple[FilesystemArtifactStore, Registry],
) -> None:
    store, registry = setup
    models = ModelStore(registry.describe, store)
    loaded = await asyncio.gather(*(models.resolve("credit", version=2) for _ in range(10)))
    assert len({id(model) for model in loaded}) == 1
    await models.close()


async def test_a_deleted_alias_or_version_is_asked_of_the_registry_again(
    setup: tuple[FilesystemArtifactStore, Registry],
) -> None:
    store, registry = setup
    models = ModelStore(registry.describe, store)
    await models.resolve("credit")  # production -> v1
    await models.resolve("credit", version=2)
    del registry.aliases[("credit", "production")]  # the registry deleted it, then said so

    models.forget_alias("credit", "production")
    await models.forget_versions("credit", [2])

    assert models.aliases_of("credit") == {}
    assert models.loaded_versions() == [("credit", 1)]
    with pytest.raises(ModelNotFound, match="no alias 'production'"):
        await models.resolve("credit")
    await models.close()


async def test_deleting_the_version_an_alias_points_at_forgets_the_alias_and_answers_what_was_queued(
    setup: tuple[FilesystemArtifactStore, Registry],
) -> None:
    store, registry = setup
    models = ModelStore(registry.describe, store)
    first = await models.resolve("credit")
    in_flight = [asyncio.ensure_future(first.predict(features(2))) for _ in range(20)]
    await asyncio.sleep(
        0
    )  # they are in the batcher's queue (one that comes later gets BatcherStopped: a 503)

    await models.forget_versions("credit", [1, 2, 3])  # the whole model

    answers = await asyncio.gather(*in_flight)
    assert [len(answer["label"]) for answer in answers] == [2] * 20
    assert models.aliases_of("credit") == {}
    assert models.loaded_versions() == []
    await models.close()


class SlowStore(FilesystemArtifactStore):
    """Holds every read until `release` is set: a load under way."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.reading = asyncio.Event()
        self.release = asyncio.Event()

    async def get_bytes(self, key: str) -> bytes:
        self.reading.set()
        await self.release.wait()
        return await super().get_bytes(key)


async def test_a_version_deleted_while_it_loads_is_not_kept(
    setup: tuple[FilesystemArtifactStore, Registry], tmp_path: Path
) -> None:
    """A request started the load; the deletion arrived before it ended: the load is thrown away, the
    request gets a 404 (ModelNotFound), and nothing of that version stays in memory."""
    _, registry = setup
    store = SlowStore(tmp_path)
    await store.start()
    models = ModelStore(registry.describe, store)
    request = asyncio.ensure_future(models.resolve("credit", version=2))
    await store.reading.wait()

    await models.forget_versions("credit", [2])
    store.release.set()

    with pytest.raises(ModelNotFound, match="version 2 was deleted as it loaded"):
        await request
    assert models.loaded_versions() == []
    # The mark is gone with that load: a later load of the version (recreated, say) is kept.
    assert (await models.resolve("credit", version=2)).version == 2
    assert models.loaded_versions() == [("credit", 2)]
    await models.close()
