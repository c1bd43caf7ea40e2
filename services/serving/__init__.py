"""High-throughput ONNX inference over the Open Inference Protocol, with hot model swaps and prediction
logging.
"""
