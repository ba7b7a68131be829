"""What each zip function weighs unzipped, code plus layers, against Lambda's 250 MiB limit (docs/architecture.md,
"Size"). The layers are the built ones (layers/builder.py); the public Powertools layer is measured on its mirror.
Image functions have a 10 GB image limit instead and are not listed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from layers import builder as layer_build
from mlops.aws import platform

POWERTOOLS = "powertools"  # the layer every zip function has first (infra.constructs.function.Packaging.layers)
MIB = 2**20


@dataclass(frozen=True)
class FunctionSize:
    function: str
    code_bytes: int
    layer_bytes: Mapping[str, int]  # layer name -> unzipped size

    @property
    def total_bytes(self) -> int:
        return self.code_bytes + sum(self.layer_bytes.values())

    @property
    def fits(self) -> bool:
        return self.total_bytes <= layer_build.LAMBDA_UNZIPPED_LIMIT


def measure(function: str, code_dir: Path, layers: Iterable[str]) -> FunctionSize:
    """`layers` by name, each built (and current) in layers/build/."""
    sizes = {}
    for name in layers:
        built = layer_build.current(name)
        if built is None:
            raise FileNotFoundError(f"layer {name!r} is not built: run `make layers`")
        sizes[name] = built.size_bytes
    return FunctionSize(function, layer_build.tree_size(code_dir), sizes)


def zip_specs() -> list[platform.FunctionSpec]:
    return [spec for spec in (*platform.FUNCTIONS, platform.INFER, platform.PUSH) if not spec.image]


def platform_sizes(config_file: Path) -> list[FunctionSize]:
    """Every zip function's size, its code bundled exactly as the CDK app bundles it (no synthesis needed)."""
    from infra.constructs.function import _ZipBundle

    layer_build.ensure([POWERTOOLS, *{name for spec in zip_specs() for name in spec.layers}])
    sizes = []
    for spec in zip_specs():
        with tempfile.TemporaryDirectory() as out:
            _ZipBundle(spec, config_file).try_bundle(out, None)  # type: ignore[arg-type]
            sizes.append(measure(spec.name, Path(out), [POWERTOOLS, *spec.layers]))
    return sizes


def table(sizes: Iterable[FunctionSize]) -> str:
    limit = layer_build.LAMBDA_UNZIPPED_LIMIT / MIB
    lines = [f"{'function':<28} {'code':>8} {'layers':>8} {'total':>8}  of {limit:.0f} MiB  layers"]
    for size in sizes:
        layers = ", ".join(f"{name} {value / MIB:.1f}" for name, value in size.layer_bytes.items())
        lines.append(f"{size.function:<28} {size.code_bytes / MIB:8.1f} {sum(size.layer_bytes.values()) / MIB:8.1f} "
                     f"{size.total_bytes / MIB:8.1f}  {'ok' if size.fits else 'TOO BIG':>9}  {layers}")
    return "\n".join(lines)
