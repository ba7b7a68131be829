"""The model manifest: the lineage record stored next to every ``model.onnx``.

One plain function builds it for both callers -- ``mlops train`` offline and the cloud ``register``
step -- so a model trained on a laptop and one trained by the pipeline describe themselves alike.
Imports stay light (stdlib only at module level): ``register`` runs in a small Lambda.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

MANIFEST_FORMAT = "mlops.registry.manifest/1"
# Set by the build (CI, container image) where the source tree has no .git to describe.
CODE_VERSION_ENV = "MLOPS_CODE_VERSION"
PACKAGE = "serverless-mlops"

# import name -> its distributions, the first installed one counted (xgboost-cpu is the CPU-only wheel of xgboost)
_LIBRARIES: dict[str, tuple[str, ...]] = {
    "sklearn": ("scikit-learn",),
    "skl2onnx": ("skl2onnx",),
    "onnx": ("onnx",),
    "onnxruntime": ("onnxruntime",),
    "numpy": ("numpy",),
    "pandas": ("pandas",),
    # the xgboost and lightgbm families (mlops.training.boosting) and their converters
    "xgboost": ("xgboost-cpu", "xgboost"),
    "lightgbm": ("lightgbm",),
    "onnxmltools": ("onnxmltools",),
}


def package_version() -> str:
    try:
        return metadata.version(PACKAGE)
    except metadata.PackageNotFoundError:
        return "0+unknown"


@functools.cache
def code_version() -> str:
    """``$MLOPS_CODE_VERSION``, else ``git describe`` of the source tree, else the package version."""
    if env := os.environ.get(CODE_VERSION_ENV):
        return env
    root = Path(__file__).resolve().parents[3]
    git = shutil.which("git")
    if git and (root / ".git").exists():
        try:
            done = subprocess.run(  # noqa: S603 -- fixed argv, no shell, no user input
                [git, "describe", "--always", "--dirty", "--tags"],
                cwd=root,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            done = None
        if done is not None and done.returncode == 0 and done.stdout.strip():
            return f"{package_version()}+git.{done.stdout.strip()}"
    return package_version()


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for key, dists in _LIBRARIES.items():
        out[key] = None
        for dist in dists:
            try:
                out[key] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _onnx_description(onnx_bytes: bytes) -> tuple[dict[str, int], list[dict[str, str]]]:
    """Opsets and inputs read from the model itself (onnx is imported only when the caller did not say)."""
    import onnx

    model = onnx.load_from_string(onnx_bytes)
    opset = {(o.domain or "ai.onnx"): int(o.version) for o in model.opset_import}
    meta = {p.key: p.value for p in model.metadata_props}
    if "features" in meta:
        inputs = json.loads(meta["features"])
    else:
        inputs = [{"name": i.name, "type": str(i.type.tensor_type.elem_type)} for i in model.graph.input]
    return opset, inputs


def build_manifest(
    *,
    model: str | None,
    family: str,
    task: str,
    params: Mapping[str, Any],
    seed: int | None,
    onnx_bytes: bytes,
    dataset: Mapping[str, Any],
    classes: Sequence[str] = (),
    features: Sequence[Any] = (),
    metrics: Mapping[str, Any] | None = None,
    latency: Mapping[str, Any] | None = None,
    timings: Mapping[str, float] | None = None,
    version: int | str | None = None,
    run_id: str | None = None,
    onnx_opset: Mapping[str, int] | None = None,
    onnx_inputs: Sequence[Mapping[str, str]] | None = None,
    parity: Mapping[str, Any] | None = None,
    code: str | None = None,
    libraries: Mapping[str, str | None] | None = None,
    created_at: str | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest as a JSON-serialisable dict.

    ``dataset`` needs ``sha256`` (of the source file bytes) and usually has ``uri`` and ``rows``; other
    keys (contract version, curated manifest) are kept. ``version`` is None until the registry assigns
    one (offline runs). ``features`` are column names or contract column dicts, as the caller has them.
    ``code`` overrides :func:`code_version`; ``extra`` keys are added at the top level. ``seed`` is None for a
    model trained outside the platform (``mlops models import``).
    """
    if "sha256" not in dataset:
        raise ValueError("dataset must carry the sha256 of the data the model was trained on")
    if onnx_opset is None or onnx_inputs is None:
        opset, inputs = _onnx_description(onnx_bytes)
        onnx_opset = onnx_opset if onnx_opset is not None else opset
        onnx_inputs = onnx_inputs if onnx_inputs is not None else inputs
    manifest: dict[str, Any] = {
        "format": MANIFEST_FORMAT,
        "model": model,
        "version": version,
        "run_id": run_id,
        "created_at": created_at or utc_now(),
        "dataset": {"uri": None, "rows": None, **dict(dataset)},
        "code_version": code or code_version(),
        "family": family,
        "task": str(task),
        "params": dict(params),
        "seed": seed,
        "libraries": dict(libraries) if libraries is not None else library_versions(),
        "onnx": {
            "opset": dict(onnx_opset),
            "sha256": sha256_bytes(onnx_bytes),
            "bytes": len(onnx_bytes),
            "inputs": [dict(i) for i in onnx_inputs],
        },
        "classes": [str(c) for c in classes],
        "features": list(features),
        "metrics": dict(metrics) if metrics is not None else None,
        "parity": dict(parity) if parity is not None else None,
        "latency": dict(latency) if latency is not None else None,
        "timings": dict(timings) if timings is not None else None,
    }
    if extra:
        manifest.update(extra)
    return manifest
