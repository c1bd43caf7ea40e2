"""Watches prediction streams for drift against the training reference, alerts subscribers and requests
retraining.
"""
