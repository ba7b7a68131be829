"""The models an execution environment serves, loaded once and verified every time they are loaded: a version's
ONNX model and its request schema, from artefacts whose sha256 the registry recorded."""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.aws.environment import MODEL_CACHE_DIR
from mlops.aws.storage import parse_s3_uri
from mlops.registry.versions import ModelVersion
from mlops.serving.errors import UnverifiableModel
from mlops.serving.onnx_model import OnnxModel
from mlops.serving.requests import FeatureSpec, schema_from_contract


@dataclass
class LoadedModel:
    version: ModelVersion
    model: OnnxModel
    schema: list[FeatureSpec]
    loaded_seconds: float
    # the sha256 of the feature definitions it was trained from (mlops.features.online); None: trained on raw columns
    features_sha256: str | None = None


_SHA256 = re.compile(r"[0-9a-f]{64}")


class ModelCache:
    """Models loaded once per execution environment. Each artefact is kept on disk under its sha256, and verified
    against what the registry recorded every time it is loaded: the manifest against the version record, the
    contract against the manifest, the model against the record. A file left by another run, another version or
    another cloud in the same directory is never taken for this version's (a name is a claim, its bytes the proof)."""

    def __init__(self, s3: Any, cache_dir: Path) -> None:
        self.s3 = s3
        self.cache_dir = cache_dir
        self._models: dict[tuple[str, int], LoadedModel] = {}

    @classmethod
    def for_environment(cls, s3: Any) -> ModelCache:
        """This execution environment's cache: in MODEL_CACHE_DIR, which the local runtimes give each environment,
        else in a folder of this process's own under the temporary directory (on Lambda the environment's /tmp).
        Never a fixed path: two processes sharing a temporary directory (tests, demos, local clouds) never share a
        cache."""
        given = os.environ.get(MODEL_CACHE_DIR)
        return cls(s3, Path(given) if given else Path(tempfile.mkdtemp(prefix="mlops-models-")))

    def cached(self, model: str, version: int) -> LoadedModel | None:
        return self._models.get((model, version))

    def _artefact(self, uri: str, sha256: str | None, what: str) -> bytes:
        if not sha256 or not _SHA256.fullmatch(sha256):
            raise UnverifiableModel(f"{what} cannot be verified: no sha256 of {uri} was recorded for it; register "
                                    "the model again (a new training run) to serve it")
        path = self.cache_dir / sha256
        if path.exists() and hashlib.sha256(data := path.read_bytes()).hexdigest() == sha256:
            return data
        bucket, key = parse_s3_uri(uri)
        data = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        if hashlib.sha256(data).hexdigest() != sha256:
            raise UnverifiableModel(f"{uri} does not match the sha256 recorded for {what}; the artefact changed "
                                    "after it was registered: register the model again, or roll this version back")
        path.parent.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{sha256}.{uuid.uuid4().hex}.part")  # two writers never share a partial file
        part.write_bytes(data)
        part.replace(path)
        return data

    def get(self, version: ModelVersion) -> LoadedModel:
        key = (version.model, version.version)
        if key in self._models:
            return self._models[key]
        started = time.perf_counter()
        what = f"{version.model} v{version.version}"
        manifest = json.loads(self._artefact(version.manifest_uri, version.manifest_sha256, f"{what}'s manifest"))
        onnx_bytes = self._artefact(version.model_uri, version.onnx_sha256, what)
        # the contract is the request schema: checked against the manifest, whose sha256 of it is immutable
        contract_sha256 = (manifest.get("contract") or {}).get("sha256")
        contract_bytes = self._artefact(version.artefacts_prefix + "contract.json", contract_sha256,
                                        f"{what}'s contract (in its manifest)")
        loaded = LoadedModel(version, OnnxModel(onnx_bytes), schema_from_contract(json.loads(contract_bytes)),
                             time.perf_counter() - started,
                             (manifest.get("feature_store") or {}).get("definitions_sha256"))
        self._models[key] = loaded
        return loaded
