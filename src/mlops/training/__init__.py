"""Training: scikit-learn pipelines, ONNX export and parity, evaluation, offline experiments, the SageMaker training
job's entry point."""
