"""Flywheel's Python SDK and `flywheel` command line."""
