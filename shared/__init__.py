"""Flywheel's common code: what two or more services share (events, bus, artifacts, database, settings)."""

# Before any metric is made (see the module).
from shared import prometheus_values  # noqa: F401
