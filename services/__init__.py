"""Flywheel's services. Each runs as `python -m services.<name>` and talks to the others only over Kafka."""
