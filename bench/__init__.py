"""Benchmarks of Flywheel's services, run by hand (see bench/README.md)."""
