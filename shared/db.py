"""The PostgreSQL connection pool: one schema per service, named by the service."""

from __future__ import annotations

import json
import re
from typing import TypeAlias

import asyncpg
import orjson
from asyncpg.pool import PoolConnectionProxy

from shared.settings import FlywheelSettings

# What repositories take: a plain connection or one borrowed from a pool.
Connection: TypeAlias = "asyncpg.Connection[asyncpg.Record] | PoolConnectionProxy[asyncpg.Record]"

_SCHEMA_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class DatabaseNotConfigured(RuntimeError):
    """No database URL: say how to get one instead of failing deep inside asyncpg."""


def validate_schema_name(schema: str) -> str:
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"schema name {schema!r} must be a lowercase SQL identifier")
    return schema


async def create_pool(settings: FlywheelSettings, *, schema: str, application_name: str) -> asyncpg.Pool:
    """A pool whose connections see `schema` first, so a service's SQL names its tables unqualified."""
    if not settings.database_url:
        raise DatabaseNotConfigured(
            "FLYWHEEL_DATABASE_URL is not set; start PostgreSQL with `bash deploy/local/infra.sh up` "
            "and export what it prints"
        )
    pool: asyncpg.Pool = await asyncpg.create_pool(
        settings.database_url,
        min_size=settings.database_pool_min,
        max_size=settings.database_pool_max,
        server_settings={
            "search_path": f"{validate_schema_name(schema)},public",
            "application_name": application_name,
        },
        init=_use_json_codecs,
        reset=_keep_session,
    )
    return pool


async def _keep_session(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """Skip asyncpg's reset query (RESET ALL, UNLISTEN *, ...), a round trip on every release: Flywheel
    leaves no session state behind (asyncpg still rolls back an open transaction first)."""


async def _use_json_codecs(connection: asyncpg.Connection[asyncpg.Record]) -> None:
    """jsonb and json columns read and write as Python objects rather than strings."""
    for type_name in ("jsonb", "json"):
        await connection.set_type_codec(
            type_name, encoder=json.dumps, decoder=_json_value, schema="pg_catalog"
        )


def _json_value(text: str) -> object:
    """What json.loads reads, 5-10x sooner for the small objects rows hold (a registry search decodes
    three per run): orjson, except where it would differ. It refuses numbers beyond float, and reads
    integers beyond 64 bits as floats: a whole float that large sends the text to json.loads."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        return json.loads(text)
    return json.loads(text) if _holds_huge_whole_float(value) else value


def _holds_huge_whole_float(value: object) -> bool:
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else (value,)
    for item in items:
        if type(item) is float:
            if abs(item) >= 2.0**63 and item.is_integer():
                return True
        elif isinstance(item, dict | list) and _holds_huge_whole_float(item):
            return True
    return False
