"""Where PostgreSQL, Kafka and MinIO are: the FLYWHEEL_* variables of `deploy/local/infra.sh`."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient

INFRA_VARIABLES = (
    "FLYWHEEL_DATABASE_URL",
    "FLYWHEEL_KAFKA_BOOTSTRAP",
    "FLYWHEEL_S3_ENDPOINT",
    "FLYWHEEL_S3_ACCESS_KEY",
    "FLYWHEEL_S3_SECRET_KEY",
)
_EXPORT_LINE = re.compile(r"^export (FLYWHEEL_[A-Z0-9_]+)=(.*)$")


def infrastructure_env(repo_root: Path) -> dict[str, str]:
    """The servers' FLYWHEEL_* variables: from the environment when all are set, otherwise from
    `infra.sh up`, which starts whatever is not running yet (idempotent) and prints them."""
    if all(os.environ.get(name) for name in INFRA_VARIABLES):
        return {name: os.environ[name] for name in INFRA_VARIABLES}
    print("FLYWHEEL_* variables not set: running `bash deploy/local/infra.sh up`", flush=True)
    completed = subprocess.run(
        ["bash", str(repo_root / "deploy/local/infra.sh"), "up"],
        check=True,
        capture_output=True,
        text=True,
    )
    found = {m.group(1): m.group(2) for m in map(_EXPORT_LINE.match, completed.stdout.splitlines()) if m}
    missing = [name for name in INFRA_VARIABLES if name not in found]
    if missing:
        raise RuntimeError(f"infra.sh up did not print {', '.join(missing)}; it printed:\n{completed.stdout}")
    return {name: found[name] for name in INFRA_VARIABLES}


def delete_kafka_topics(bootstrap: str, namespace: str) -> list[str]:
    """Delete the topics a benchmark server created under its own namespace; return their names."""
    return asyncio.run(_delete_kafka_topics(bootstrap, f"{namespace}."))


async def _delete_kafka_topics(bootstrap: str, prefix: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [topic for topic in await admin.list_topics() if topic.startswith(prefix)]
        if topics:
            await admin.delete_topics(topics)
        return topics
    finally:
        await admin.close()
