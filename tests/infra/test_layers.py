"""layers/builder.py: what triggers a rebuild, what a trim removes, and that the built layers link completely."""

from __future__ import annotations

from pathlib import Path

import pytest

from layers import builder
from mlops.aws import platform


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


@pytest.mark.parametrize("name", sorted({n for s in (*platform.FUNCTIONS, platform.INFER) for n in s.layers}))
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
    """The trimmed pyarrow extension modules, blocked in this virtualenv's pyarrow (the same pinned version):
    ingest still imports, reads CSV and writes and reads parquet."""
    import subprocess
    import sys

    modules = sorted(pattern.removesuffix("*.so").replace("/", ".") for pattern in builder.LAYERS["data"].drop
                     if pattern.endswith("*.so") and "/_" in pattern)
    assert "pyarrow._flight" in modules
    spec = platform.function("ingest")
    result = subprocess.run(
        [sys.executable, "-c", DATA_LAYER_USE, ",".join(modules), str(spec.code_dir)],
        env={**{v: "placeholder" for v in spec.env}, "AWS_DEFAULT_REGION": "us-east-1",
             "POWERTOOLS_TRACE_DISABLED": "true", "PATH": ""},
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
