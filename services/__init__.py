"""Flywheel's services. Each runs as `python -m services.<name>` and talks to the others only over Kafka."""

# shared's package sets prometheus_client up before any metric is made; a service module may make one first.
import shared  # noqa: F401
