"""The artifact store: S3/MinIO in production, a local directory in the embedded mode."""

from shared.artifacts.base import (
    ArtifactNotFound,
    ArtifactStore,
    InvalidArtifactKey,
    ObjectInfo,
    validate_key,
)
from shared.artifacts.filesystem import FilesystemArtifactStore
from shared.artifacts.s3 import S3ArtifactStore
from shared.settings import FlywheelSettings


def create_artifact_store(settings: FlywheelSettings) -> ArtifactStore:
    """S3 when `FLYWHEEL_S3_ENDPOINT` is set, else files under `FLYWHEEL_DATA_DIR/artifacts`."""
    if settings.s3_endpoint:
        return S3ArtifactStore(
            settings.s3_endpoint,
            access_key=settings.s3_access_key.get_secret_value(),
            secret_key=settings.s3_secret_key.get_secret_value(),
            bucket=settings.s3_bucket,
            region=settings.s3_region,
        )
    return FilesystemArtifactStore(settings.data_dir / "artifacts")


__all__ = [
    "ArtifactNotFound",
    "ArtifactStore",
    "FilesystemArtifactStore",
    "InvalidArtifactKey",
    "ObjectInfo",
    "S3ArtifactStore",
    "create_artifact_store",
    "validate_key",
]
