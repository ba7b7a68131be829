"""The training pipeline's steps (train_trigger, train, evaluate, register, record_outcome)."""
