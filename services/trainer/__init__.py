"""Trains scikit-learn models, converts them to ONNX, checks parity and reports runs; retrains on
request.
"""
