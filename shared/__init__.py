"""Flywheel's common code: what two or more services share (events, bus, artifacts, database, settings)."""
