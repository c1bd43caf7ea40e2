"""Experiment tracking and the model registry: experiments, runs, params, metrics, artifacts;
registered models, versions, aliases and lineage.
"""
