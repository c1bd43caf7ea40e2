"""The registry benchmark: Flywheel's tracking REST API against an MLflow tracking server on the same
PostgreSQL, with the same workload."""
