"""Serving: request validation, the model cache, capture, the model server, ONNX scoring, push mode."""
