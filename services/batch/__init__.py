"""Scores records sent by Kafka producers and files in object storage, writing results back."""
