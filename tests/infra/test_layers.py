"""layers/builder.py: what triggers a rebuild, what a trim removes, that the built layers link completely, and that
they hold what the zip functions import (beyond what the Lambda runtime provides) and nothing the runtime has."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from layers import builder
from mlops.aws import platform

ZIP_SPECS = [spec for spec in (*platform.FUNCTIONS, platform.INFER, platform.PUSH) if not spec.image]
# The Lambda python3.12 runtime's own packages (the AWS SDK and its dependencies), as import names
RUNTIME_PACKAGES = {"boto3", "botocore", "s3transfer", "urllib3", "dateutil", "six"}
# What every zip function's handler finds set when it is imported (values are placeholders: nothing is called)
PLACEHOLDER_ENV = {
    "AWS_DEFAULT_REGION": "us-east-1", "POWERTOOLS_TRACE_DISABLED": "true", "PATH": "", "MODEL_NAME": "m",
    "PUSH_OUTPUT": "topic", "PREDICTIONS_TOPIC_ARN": "arn:aws:sns:us-east-1:123456789012:predictions",
    "DEAD_LETTER_QUEUE_URL": "https://sqs.us-east-1.amazonaws.com/123456789012/dead-letters",
    "INFER_FUNCTIONS": "{}", **{variable: "placeholder" for spec in ZIP_SPECS for variable in spec.env
                                 if variable not in ("CAPTURE_STREAM", "INFER_FUNCTIONS")},
}


def layer_entries(name: str) -> set[str]:
    """What a built layer puts on sys.path: its top-level packages and modules (python/<name>[.py|.so])."""
    return {path.name.split(".")[0] for path in (builder.layer_dir(name) / "python").iterdir()
            if not path.name.endswith((".dist-info", ".libs"))}


def test_a_layer_is_rebuilt_when_a_pin_it_holds_changes_and_only_then() -> None:
    spec = builder.LAYERS["infer"]
    pins = {"onnxruntime": "1.0", "numpy": "2.0", "protobuf": "6.0", "pandas": "3.0"}
    held = ["onnxruntime", "numpy", "protobuf"]
    base = builder.inputs_hash(spec, held, pins)
    assert builder.inputs_hash(spec, held, {**pins, "pandas": "3.1"}) == base  # not in this layer
    assert builder.inputs_hash(spec, held, {**pins, "protobuf": "6.1"}) != base  # a dependency it holds
    assert builder.inputs_hash(spec, held, {**pins, "numpy": "2.1"}) != base


def test_a_stale_or_missing_layer_is_not_current(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(builder, "BUILD_DIR", tmp_path)
    assert builder.current("infer") is None
    (tmp_path / "infer" / "python").mkdir(parents=True)
    stamp = builder.Built("infer", "not-the-hash", {"numpy": "0"}, 1)
    (tmp_path / "infer.json").write_text(
        '{"name": "infer", "inputs": "not-the-hash", "distributions": {"numpy": "0"}, "size_bytes": 1}')
    assert builder.current("infer") is None
    fresh = builder.inputs_hash(builder.LAYERS["infer"], stamp.distributions, builder.constraint_pins())
    (tmp_path / "infer.json").write_text(
        f'{{"name": "infer", "inputs": "{fresh}", "distributions": {{"numpy": "0"}}, "size_bytes": 1}}')
    assert builder.current("infer") == builder.Built("infer", fresh, {"numpy": "0"}, 1)


def test_trim_removes_tests_sources_and_the_named_libraries(tmp_path: Path) -> None:
    for name in ("pandas/tests/test_x.py", "pandas/core/frame.py", "pyarrow/_flight.cpython-312.so",
                 "pyarrow/lib.pyx", "pyarrow/lib.cpython-312.so", "pkg/sub/_flight.cpython-312.so"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    removed = builder.trim(tmp_path, (*builder.COMMON_DROP, "pyarrow/_flight*.so"))
    assert set(removed) == {"pandas/tests", "pyarrow/_flight.cpython-312.so", "pyarrow/lib.pyx"}
    assert (tmp_path / "pkg/sub/_flight.cpython-312.so").exists()  # anchored patterns stay anchored
    assert (tmp_path / "pyarrow/lib.cpython-312.so").exists()


@pytest.mark.parametrize("name", sorted(builder.LAYERS))
def test_built_layers_link_completely(name: str) -> None:
    """Every shared library a kept extension needs is in the layer or in the Lambda runtime (the build checks
    this too; here on what is on disk now)."""
    built = builder.ensure([name])[name]
    site = built.path / "python"
    extensions = [p for p in site.rglob("*.so") if p.is_file()]
    assert extensions
    needed = {n for p in extensions for n in builder.elf_needed(p) or ()}
    assert "libc.so.6" in needed  # the ELF reader reads real entries
    assert builder.unresolved_libraries(site) == {}
    assert not list(site.rglob("__pycache__"))
    assert not [p for p in site.rglob("tests") if p.is_dir()]
    assert not list(site.rglob("*.pyi"))
    assert not (site / "bin").exists()


# The handler imported with only its layers and the runtime's packages reachable in this virtualenv (the same pinned
# versions): a package found in site-packages but in none of them cannot be imported. Optional imports a package
# guards (try/except ImportError) still fail quietly, as they would on Lambda.
ONLY_LAYERS = """
import importlib.abc, importlib.machinery, os, sys, sysconfig
allowed = set(sys.argv[1].split(","))
sites = {os.path.realpath(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}
class OnlyLayers(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if path is not None:
            return None  # a submodule: its package was let in
        spec = importlib.machinery.PathFinder.find_spec(name)
        where = spec and (spec.origin if spec.origin not in (None, "namespace") else
                          next(iter(spec.submodule_search_locations or []), None))
        for site in sites:
            if where and os.path.realpath(where).startswith(site + os.sep):
                entry = os.path.relpath(os.path.realpath(where), site).split(os.sep)[0].split(".")[0]
                if entry not in allowed:
                    raise ImportError(f"{name} is in no layer of this function and not in the Lambda runtime")
        return None
sys.meta_path.insert(0, OnlyLayers())
sys.path.insert(0, sys.argv[2])
import handler
"""


@pytest.mark.parametrize("spec", [pytest.param(spec, id=spec.name) for spec in ZIP_SPECS])
def test_a_zip_function_imports_only_from_its_built_layers_and_the_runtime(spec: platform.FunctionSpec) -> None:
    """Every zip function deploys the Powertools layer built here (not AWS's public one, whose content no test sees)
    and its own layers; what its handler imports beyond the standard library is in those or in the runtime."""
    from infra.app import used_layers

    assert builder.POWERTOOLS in used_layers()
    layers = [builder.POWERTOOLS, *spec.layers]
    allowed = RUNTIME_PACKAGES.union(*(layer_entries(name) for name in builder.ensure(layers)))
    result = subprocess.run([sys.executable, "-c", ONLY_LAYERS, ",".join(sorted(allowed)), str(spec.code_dir)],
                            env=PLACEHOLDER_ENV, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_the_powertools_layer_holds_none_of_what_the_runtime_provides() -> None:
    built = builder.ensure([builder.POWERTOOLS])[builder.POWERTOOLS]
    assert not layer_entries(builder.POWERTOOLS) & RUNTIME_PACKAGES
    assert not {builder.normalize(name) for name in builder.RUNTIME_PROVIDED} & set(built.distributions)
    assert {"aws-lambda-powertools", "pydantic", "aws-xray-sdk"} <= set(built.distributions)
    # the Swagger UI's assets are not there; the modules that would serve them are
    swagger = built.path / "python" / "aws_lambda_powertools" / "event_handler" / "openapi" / "swagger_ui"
    assert (swagger / "html.py").is_file()
    assert not list(swagger.glob("*.min.*"))


def test_drop_distributions_removes_what_their_record_lists(tmp_path: Path) -> None:
    for name, files in {"botocore": ["botocore/__init__.py", "botocore/data/s3/x.json"],
                        "wrapt": ["wrapt/__init__.py"]}.items():
        info = tmp_path / f"{name}-1.0.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Name: {name}\nVersion: 1.0\n")
        (info / "RECORD").write_text("".join(f"{f},sha256=x,1\n" for f in [*files, f"{info.name}/METADATA"])
                                     + "../../bin/script,,\n")
        for file in files:
            (tmp_path / file).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / file).write_text("x")
    assert builder.drop_distributions(tmp_path, ["botocore"]) == ["botocore"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wrapt", "wrapt-1.0.dist-info"]


# what ingest does with the data layer: a CSV read by pyarrow, a parquet round trip through pandas, its handler
DATA_LAYER_USE = """
import importlib.abc, io, os, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in blocked:
            raise ImportError(f"{name} is trimmed from the data layer")
sys.meta_path.insert(0, Block())
import pandas, pyarrow.csv, pyarrow.parquet, pyarrow.compute, pyarrow.fs, pyarrow.dataset
assert pyarrow.csv.read_csv(io.BytesIO(b"a,b\\n1,2\\n")).num_rows == 1
buffer = io.BytesIO()
pandas.DataFrame({"a": [1.0, 2.0]}).to_parquet(buffer)
assert pandas.read_parquet(io.BytesIO(buffer.getvalue())).shape == (2, 1)
sys.path.insert(0, sys.argv[2])
import handler
"""


def test_what_the_data_layer_trims_is_never_imported_by_ingest() -> None:
    """The modules the data layer drops, blocked in this virtualenv's pyarrow and numpy (the same pinned versions):
    ingest still imports, reads CSV and writes and reads parquet."""
    modules = builder.LAYERS["data"].unused
    assert {"pyarrow._flight", "pyarrow._parquet_encryption", "numpy._core._simd"} <= set(modules)
    spec = platform.function("ingest")
    result = subprocess.run(
        [sys.executable, "-c", DATA_LAYER_USE, ",".join(modules), str(spec.code_dir)],
        env={**{v: "placeholder" for v in spec.env}, "AWS_DEFAULT_REGION": "us-east-1",
             "POWERTOOLS_TRACE_DISABLED": "true", "PATH": ""},
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


# what infer and push do with the infer layer: their handlers import, and a model is scored the way they score it
INFER_LAYER_USE = """
import importlib.abc, sys
blocked = set(sys.argv[1].split(","))
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in blocked):
            raise ImportError(f"{name} is trimmed from the infer layer")
sys.meta_path.insert(0, Block())
import runpy
for handler in sys.argv[3:]:
    runpy.run_path(handler)
from mlops.serving.onnx_model import OnnxModel
from mlops.serving.requests import validate_row, schema_from_contract
from mlops.serving.scoring import score
import json
model = OnnxModel(open(sys.argv[2], "rb").read())
row = {"x": 1.5, "colour": "red"}
schema = schema_from_contract({"target": "y", "columns": [{"name": "x", "kind": "numeric"},
    {"name": "colour", "kind": "categorical", "categories": ["red", "blue"]}, {"name": "y", "kind": "integer"}]})
[answer] = score(model, [validate_row(row, schema, "features")])
assert answer is not None and set(answer["probabilities"]) == {"0", "1"}, answer
"""


def test_what_the_infer_layer_trims_is_never_imported_by_infer_or_push(tmp_path: Path) -> None:
    """The modules the infer layer drops, blocked in this virtualenv's onnxruntime and numpy (the same pinned
    versions): infer's and push's handlers still import, and a model with a numeric and a categorical input answers."""
    import pandas as pd

    from mlops.core.config import ModelConfig
    from mlops.core.tasks import Task
    from mlops.data.inference import infer_contract
    from mlops.training.onnx_export import to_onnx
    from mlops.training.train import train

    frame = pd.DataFrame({"x": [float(i) for i in range(40)], "colour": ["red", "blue"] * 20,
                          "y": [i % 2 for i in range(40)]})
    contract = infer_contract(frame, "y")
    config = ModelConfig(name="unit", target="y", task=Task.BINARY, family="logistic_regression",
                         primary_metric="accuracy")
    model = tmp_path / "model.onnx"
    model.write_bytes(to_onnx(train(frame, contract, config).pipeline, contract, Task.BINARY))
    modules = builder.LAYERS["infer"].unused
    assert {"onnxruntime.transformers", "onnxruntime.tools", "numpy.f2py"} <= set(modules)
    handlers = [str(spec.code_dir / "handler.py") for spec in (platform.INFER, platform.PUSH)]
    result = subprocess.run([sys.executable, "-c", INFER_LAYER_USE, ",".join(modules), str(model), *handlers],
                            env=PLACEHOLDER_ENV, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]


def test_a_layer_spec_turns_unused_modules_into_patterns_the_trim_applies(tmp_path: Path) -> None:
    spec = builder.LayerSpec("x", "x", ("x",), unused=("pkg.sub", "pkg._ext"))
    for name in ("pkg/sub/__init__.py", "pkg/_ext.cpython-312-x86_64-linux-gnu.so", "pkg/_ext.pyi", "pkg/_extra.py",
                 "pkg/keep.py"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x")
    builder.trim(tmp_path, spec.drop_patterns)
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*") if p.is_file()) == [
        "pkg/_extra.py", "pkg/keep.py"]
