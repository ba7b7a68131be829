"""Build the Lambda layers without Docker: `python -m layers.builder [NAME ...]` (`make layers` builds them all).

Each layer is what one need takes at run time, never one giant layer (docs/architecture.md): `powertools` is
Powertools with the extras the functions import (every zip function has it), `infer` is onnxruntime + numpy, `data`
is pandas + pyarrow. pip installs the manylinux wheels for Lambda's python3.12 into `layers/build/<name>/python/`
(Lambda puts `/opt/python` on sys.path), pinned by constraints.txt; then the build drops what the Lambda runtime
already provides (boto3 and its dependencies) and what nothing imports at run time (tests, type stubs, Cython sources,
C headers, console scripts, the modules a spec names as unused), and checks that every shared library a kept
extension links against is still there.

A layer is rebuilt only when its inputs change: the pins (in constraints.txt) of the distributions it holds and its
spec below, hashed into `layers/build/<name>.json`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import fnmatch
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD_DIR = ROOT / "layers" / "build"
CONSTRAINTS = ROOT / "constraints.txt"
PYTHON_VERSION = "3.12"  # Lambda's runtime for every zip function (infra/constructs/function.py ZIP_RUNTIME)
# onnxruntime and pyarrow only publish manylinux_2_28 / 2_34 wheels; all three run on Amazon Linux 2023 (glibc 2.34)
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64")
# Lambda's hard limit for a function's code plus all its layers, unzipped.
LAMBDA_UNZIPPED_LIMIT = 250 * 1024 * 1024
# Bump when the build itself changes what ends up in a layer (trims, layout): every layer is rebuilt.
BUILD_FORMAT = 2
# The layer every zip function has first (infra.constructs.function.Packaging.layers).
POWERTOOLS = "powertools"

# Removed from every layer: never imported by a function at run time (type stubs and console scripts included:
# Lambda neither type-checks nor runs a layer's bin/).
COMMON_DROP = (
    "**/__pycache__", "**/*.pyc",
    "**/tests", "numpy/_core/include", "numpy/_core/lib/pkgconfig", "numpy/f2py/tests",
    "**/*.pyx", "**/*.pxd", "**/*.pxi", "**/*.h", "**/*.hpp",
    "**/*.pyi", "*-stubs", "bin",
)
# numpy's test-only extension modules and f2py (Fortran wrappers, imported only when asked for by name): in both
# layers that hold numpy, never imported by a function (tests/infra/test_layers.py runs them with these blocked).
NUMPY_UNUSED = ("numpy.f2py", "numpy._core._simd", "numpy._core._multiarray_tests", "numpy._core._umath_tests",
                "numpy._core._rational_tests", "numpy._core._struct_ufunc_tests", "numpy._core._operand_flag_tests")
# What the Lambda python3.12 runtime provides (the AWS SDK and its dependencies), which a layer's copy would only
# shadow: installed as dependencies (the X-Ray SDK needs botocore), then removed.
RUNTIME_PROVIDED = ("boto3", "botocore", "s3transfer", "urllib3", "python-dateutil", "six")
# Shared libraries every Lambda runtime provides (the manylinux policy's system libraries plus the loader).
SYSTEM_LIBRARIES = frozenset({
    "libc.so.6", "libm.so.6", "libdl.so.2", "librt.so.1", "libpthread.so.0", "libgcc_s.so.1", "libstdc++.so.6",
    "ld-linux-x86-64.so.2", "libutil.so.1", "libresolv.so.2", "libnsl.so.1", "libz.so.1",
})


@dataclass(frozen=True)
class LayerSpec:
    name: str
    description: str
    requirements: tuple[str, ...]  # distributions (with extras); versions come from constraints.txt
    drop: tuple[str, ...] = ()  # glob patterns under python/, beyond COMMON_DROP
    # modules (or packages) no function imports, dropped with their files: the tests block exactly these
    unused: tuple[str, ...] = ()
    # distributions the Lambda runtime provides, removed after the install (every file their RECORD lists)
    runtime_provided: tuple[str, ...] = ()

    @property
    def drop_patterns(self) -> tuple[str, ...]:
        modules = tuple(pattern for module in self.unused
                        for pattern in (module.replace(".", "/"), module.replace(".", "/") + ".*"))
        return (*COMMON_DROP, *self.drop, *modules)


LAYERS: dict[str, LayerSpec] = {spec.name: spec for spec in (
    # What the functions import from Powertools: its core (logger, metrics, event handler, batch, idempotency,
    # parser), `tracer` (the X-Ray SDK) and `parser` (pydantic, which the event handler's validation needs too).
    # Not the public layer's other extras (data masking's encryption SDK, validation's fastjsonschema, ...) nor the
    # AWS SDK, which the runtime has.
    LayerSpec(POWERTOOLS, "Powertools with the tracer and parser extras (pydantic, X-Ray SDK), without the AWS SDK",
              ("aws-lambda-powertools[tracer,parser]",),
              # the Swagger UI's bundled script and style, read only by enable_swagger(), which no function calls
              drop=("aws_lambda_powertools/event_handler/openapi/swagger_ui/*.min.js",
                    "aws_lambda_powertools/event_handler/openapi/swagger_ui/*.min.css"),
              runtime_provided=RUNTIME_PROVIDED),
    LayerSpec("infer", "onnxruntime + numpy: what infer needs to run an ONNX model",
              ("onnxruntime", "numpy"),
              # onnxruntime's tools for building and tuning models (transformer fusion, quantization, conversion),
              # its ONNX backend API and sample datasets: `import onnxruntime` loads none of them
              unused=("onnxruntime.transformers", "onnxruntime.quantization", "onnxruntime.tools",
                      "onnxruntime.backend", "onnxruntime.datasets", *NUMPY_UNUSED)),
    LayerSpec("data", "pandas + pyarrow (trimmed): what ingest needs to read, check and write a dataset",
              ("pandas", "pyarrow"),
              # mlops reads and writes S3 through boto3 and serves nothing over Arrow Flight; its datasets are CSV
              # in and Parquet out, unencrypted. libarrow_substrait stays: libarrow_python links against it.
              drop=("pyarrow/libarrow_flight.so*", "pyarrow/libarrow_python_flight.so*", "pyarrow/libarrow_s3.so*",
                    "pyarrow/libarrow_python_parquet_encryption.so*", "pyarrow/src", "pyarrow/include"),
              # pyarrow imports these extension modules only on demand (pyarrow.flight, pyarrow.orc, ...) or guards
              # them with try/except ImportError (pyarrow.fs's S3/GCS/Azure/HDFS filesystems, parquet encryption)
              unused=("pyarrow._flight", "pyarrow._pyarrow_cpp_tests", "pyarrow._s3fs", "pyarrow._gcsfs",
                      "pyarrow._azurefs", "pyarrow._hdfs", "pyarrow._orc", "pyarrow._dataset_orc",
                      "pyarrow._substrait", "pyarrow._parquet_encryption", "pyarrow._dataset_parquet_encryption",
                      *NUMPY_UNUSED)),
)}


@dataclass(frozen=True)
class Built:
    name: str
    inputs: str  # the hash of what the layer was built from
    distributions: dict[str, str]  # name -> version, as installed
    size_bytes: int  # unzipped

    @property
    def path(self) -> Path:
        return layer_dir(self.name)


def layer_dir(name: str) -> Path:
    """The layer's content (its `python/` folder inside), which the CDK app zips as the layer's asset."""
    return BUILD_DIR / name


def _stamp(name: str) -> Path:
    return BUILD_DIR / f"{name}.json"


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name.split("[", 1)[0]).lower()


def constraint_pins(path: Path = CONSTRAINTS) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, version = line.split("==", 1)
            pins[normalize(name)] = version.strip()
    return pins


def inputs_hash(spec: LayerSpec, distributions: Iterable[str], pins: dict[str, str]) -> str:
    """What the layer depends on: its spec, the platform, and the pins of every distribution it holds (a pin that
    changes in constraints.txt for an installed dependency rebuilds it too)."""
    names = sorted({normalize(r) for r in (*spec.requirements, *spec.runtime_provided)}
                   | {normalize(d) for d in distributions})
    payload = {"format": BUILD_FORMAT, "python": PYTHON_VERSION, "platforms": PLATFORMS, "spec": asdict(spec),
               "common_drop": COMMON_DROP, "pins": {n: pins.get(n, "unpinned") for n in names}}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def current(name: str) -> Built | None:
    """The built layer if it is there and up to date with its inputs, else None."""
    stamp = _stamp(name)
    if not stamp.is_file() or not (layer_dir(name) / "python").is_dir():
        return None
    built = Built(**json.loads(stamp.read_text()))
    if built.inputs != inputs_hash(LAYERS[name], built.distributions, constraint_pins()):
        return None
    return built


def tree_size(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _pip_install(spec: LayerSpec, target: Path) -> None:
    command = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
        "--target", str(target), "--python-version", PYTHON_VERSION, "--implementation", "cp",
        "--only-binary=:all:", *(arg for platform in PLATFORMS for arg in ("--platform", platform)),
        "--constraint", str(CONSTRAINTS), *spec.requirements,
    ]
    subprocess.run(command, check=True)  # noqa: S603 - our own interpreter's pip, arguments from LAYERS


def _matches(relative: str, pattern: str) -> bool:
    if pattern.startswith("**/"):
        tail = pattern[3:]
        return any(fnmatch.fnmatch(part, tail) for part in relative.split("/")) or fnmatch.fnmatch(relative, tail)
    return fnmatch.fnmatch(relative, pattern)


def drop_distributions(site: Path, names: Iterable[str]) -> list[str]:
    """Remove the named distributions installed in `site`: every file their RECORD lists, the folders left empty, and
    their metadata. Returns the names removed."""
    wanted = {normalize(name) for name in names}
    root = site.resolve()
    removed: list[str] = []
    for info in sorted(site.glob("*.dist-info")):
        name = re.search(r"^Name: (.+)$", (info / "METADATA").read_text(errors="replace"), re.MULTILINE)
        if name is None or normalize(name.group(1)) not in wanted:
            continue
        folders: set[Path] = set()
        for row in (info / "RECORD").read_text().splitlines():
            path = (root / row.split(",", 1)[0]).resolve()
            if path.is_relative_to(root) and path.is_file():  # its scripts (../../bin) were never put here
                path.unlink()
                folders.update(p for p in path.parents if p.is_relative_to(root) and p != root)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        shutil.rmtree(info, ignore_errors=True)
        removed.append(normalize(name.group(1)))
    return removed


def trim(site: Path, patterns: Sequence[str]) -> list[str]:
    """Remove every file or folder under `site` matching a pattern; returns what was removed (relative paths)."""
    removed: list[str] = []
    for path in sorted(site.rglob("*"), key=lambda p: len(p.parts)):
        if not path.exists() and not path.is_symlink():
            continue  # inside a folder already removed
        relative = path.relative_to(site).as_posix()
        if any(_matches(relative, pattern) for pattern in patterns):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
            removed.append(relative)
    return removed


def elf_needed(path: Path) -> list[str] | None:
    """The DT_NEEDED entries of a 64-bit little-endian ELF file, or None when it is not one."""
    data = path.read_bytes()
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        return None
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
    needed: list[str] = []
    for _name, kind, _flags, _addr, offset, size, link, _info, _align, entsize in sections:
        if kind != 6:  # SHT_DYNAMIC
            continue
        strtab_offset = sections[link][4]
        for i in range(size // (entsize or 16)):
            tag, value = struct.unpack_from("<qQ", data, offset + i * (entsize or 16))
            if tag == 0:  # DT_NULL
                break
            if tag == 1:  # DT_NEEDED
                end = data.index(b"\0", strtab_offset + value)
                needed.append(data[strtab_offset + value:end].decode())
    return needed


def drop_unreferenced_copies(site: Path) -> list[str]:
    """Wheels cannot hold symlinks, so a library shipped as lib.so, lib.so.N and lib.so.N.M is three full copies:
    keep the names some extension links against, drop the identical others."""
    needed = {name for path in site.rglob("*.so*") if path.is_file() for name in (elf_needed(path) or ())}
    removed: list[str] = []
    by_content: dict[tuple[Path, int], list[Path]] = {}
    for path in site.rglob("lib*.so*"):
        if path.is_file():
            by_content.setdefault((path.parent, path.stat().st_size), []).append(path)
    for copies in by_content.values():
        if len(copies) < 2 or len({hashlib.sha256(p.read_bytes()).digest() for p in copies}) != 1:
            continue
        kept = [p for p in copies if p.name in needed] or copies[:1]
        for path in copies:
            if path not in kept:
                path.unlink()
                removed.append(path.relative_to(site).as_posix())
    return removed


def unresolved_libraries(site: Path) -> dict[str, list[str]]:
    """Shared libraries linked against but neither in the layer nor provided by the runtime: a trim went too far."""
    present = {p.name for p in site.rglob("*") if p.is_file()}
    missing: dict[str, list[str]] = {}
    for path in site.rglob("*.so*"):
        needed = elf_needed(path) if path.is_file() else None
        if absent := [n for n in needed or () if n not in present and n not in SYSTEM_LIBRARIES]:
            missing[path.relative_to(site).as_posix()] = absent
    return missing


def installed_distributions(site: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for info in site.glob("*.dist-info"):
        metadata = (info / "METADATA").read_text(errors="replace")
        name = re.search(r"^Name: (.+)$", metadata, re.MULTILINE)
        version = re.search(r"^Version: (.+)$", metadata, re.MULTILINE)
        if name and version:
            found[normalize(name.group(1))] = version.group(1).strip()
    return found


@contextlib.contextmanager
def _exclusive(name: str) -> Iterator[None]:
    """One builder of a layer at a time on this machine: the test suite's workers (pytest -n) synthesize at once."""
    BUILD_DIR.mkdir(parents=True, exist_ok=True)
    with (BUILD_DIR / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def build(name: str, *, force: bool = False) -> Built:
    """Build one layer into layers/build/<name>/python/, unless it is already built from the same inputs."""
    if not force and (built := current(name)) is not None:
        return built
    with _exclusive(name):
        # another builder may have finished while this one waited
        if not force and (built := current(name)) is not None:
            return built
        return _build(name)


def _build(name: str) -> Built:
    spec = LAYERS[name]
    # built aside, then swapped in: an interrupted build never looks like a built layer
    with tempfile.TemporaryDirectory(dir=BUILD_DIR, prefix=f".{name}-") as tmp:
        staging = Path(tmp) / name
        site = staging / "python"
        _pip_install(spec, site)
        drop_distributions(site, spec.runtime_provided)
        trim(site, spec.drop_patterns)
        drop_unreferenced_copies(site)
        if missing := unresolved_libraries(site):
            raise RuntimeError(f"layer {name}: trimmed libraries are still linked against: {missing}")
        distributions = installed_distributions(site)
        built = Built(name, inputs_hash(spec, distributions, constraint_pins()), distributions, tree_size(staging))
        shutil.rmtree(layer_dir(name), ignore_errors=True)
        os.replace(staging, layer_dir(name))
    _stamp(name).write_text(json.dumps(asdict(built), indent=2, sort_keys=True) + "\n")
    return built


def ensure(names: Iterable[str] | None = None) -> dict[str, Built]:
    """Every named layer (all by default), built if missing or stale."""
    return {name: build(name) for name in (names or LAYERS)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layers.builder", description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", metavar="NAME",
                        help=f"layers to build (default: all of {', '.join(LAYERS)})")
    parser.add_argument("--force", action="store_true", help="rebuild even if the inputs did not change")
    args = parser.parse_args(argv)
    if unknown := [name for name in args.names if name not in LAYERS]:
        parser.error(f"unknown layers {unknown}; choose among {list(LAYERS)}")
    for name in args.names or LAYERS:
        was = current(name)
        built = build(name, force=args.force)
        state = "up to date" if was is not None and not args.force else "built"
        print(f"layer {name:<11} {built.size_bytes / 2**20:7.1f} MiB  {state}  ({layer_dir(name).relative_to(ROOT)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
