"""Typed domain errors. Each is translated in one place per surface: the class name is the error name
that Step Functions Retry/Catch match on, the CLI prints the message, the API maps it to a status."""

from __future__ import annotations


class MlopsError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigError(MlopsError):
    """The project configuration is missing or invalid."""


class UnknownModel(MlopsError):
    """A model name that the configuration does not declare."""


class FileRejected(MlopsError):
    """A whole input file cannot be used; ``code`` is a stable machine-readable reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class InvalidDataset(MlopsError):
    """A dataset cannot be trained on (too few rows, one class only, missing target...)."""


class ParityError(MlopsError):
    """The exported ONNX model disagrees with the scikit-learn pipeline it came from."""


class ExportError(MlopsError):
    """A fitted model cannot be exported to ONNX (a step without a converter)."""


class IntegrityError(MlopsError):
    """An artefact does not match the sha256 recorded in its manifest."""


class RegistryConflict(MlopsError):
    """A concurrent writer got there first (conditional write failed)."""


class TransientError(MlopsError):
    """A retryable failure (throttling, 5xx, timeout): Step Functions retries it with backoff."""
