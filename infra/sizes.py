"""What each zip function weighs unzipped, code plus layers, part by part, against its budget and Lambda's 250 MiB limit
for code + layers (docs/architecture.md, "Size"). The layers are the built ones (layers/builder.py), which are what
the stack deploys. Image functions have a 10 GB image limit instead and are not listed."""

from __future__ import annotations

import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from layers import builder as layer_build
from mlops.aws import platform

POWERTOOLS = layer_build.POWERTOOLS  # the layer every zip function has first
CODE = "code"  # the function's own bundle: its handler, mlops.toml and the mlops package
MIB = 2**20
LIMIT = layer_build.LAMBDA_UNZIPPED_LIMIT
# Each zip function's target, a share of Lambda's limit for code + layers (issue 15); the others may use it all.
TARGETS = {"infer": 0.60, "push": 0.60, "ingest": 0.75}
# What each part may weigh unzipped (MiB): a dependency bump that outgrows its part fails tests/infra/test_sizes.py
# naming that part. The budgets of a function's parts add up to no more than its target (a test checks it), so a
# function cannot outgrow its target before one of its parts outgrows its budget. Set a little above what each part
# weighs today (code 1.1, powertools 10.3, infer 114.4, data 170.7): raising one is a decision, taken here. Code went
# from 1.0 to 1.5 when the package grew past 1 MiB (issue 17: clustering, models import, user code, boosting): every
# zip carries the whole mlops package but mlops.local, and the training modules weigh little beside the layers.
BUDGETS_MIB = {CODE: 1.5, POWERTOOLS: 12.0, "infer": 125.0, "data": 174.0}


def budget_bytes(part: str) -> int:
    if part not in BUDGETS_MIB:
        raise KeyError(f"no size budget for {part!r}: give it one in infra/sizes.py BUDGETS_MIB")
    return int(BUDGETS_MIB[part] * MIB)


@dataclass(frozen=True)
class FunctionSize:
    function: str  # the platform name, with the model's in brackets for a per-model function ("infer (wine)")
    code_bytes: int
    layer_bytes: Mapping[str, int]  # layer name -> unzipped size

    @property
    def name(self) -> str:
        return self.function.split(" ")[0]

    @property
    def parts(self) -> dict[str, int]:
        return {CODE: self.code_bytes, **self.layer_bytes}

    @property
    def total_bytes(self) -> int:
        return self.code_bytes + sum(self.layer_bytes.values())

    @property
    def fits(self) -> bool:
        return self.total_bytes <= LIMIT

    @property
    def target(self) -> float:
        return TARGETS.get(self.name, 1.0)

    @property
    def meets_target(self) -> bool:
        return self.total_bytes <= self.target * LIMIT

    def over_budget(self) -> list[str]:
        """Each part heavier than its budget, said with both sizes."""
        return [f"{self.function}: {part} is {size / MIB:.1f} MiB, over its budget of {BUDGETS_MIB[part]:g} MiB"
                for part, size in self.parts.items() if size > budget_bytes(part)]


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
    """One line per part (with its budget) and one per function total (with its target), in MiB."""
    lines = [f"{'function':<28} {'part':<12} {'MiB':>7} {'budget':>7}"]
    for size in sizes:
        for i, (part, value) in enumerate(size.parts.items()):
            flag = "" if value <= budget_bytes(part) else "  OVER BUDGET"
            lines.append(f"{size.function if i == 0 else '':<28} {part:<12} {value / MIB:7.1f} "
                         f"{BUDGETS_MIB[part]:7.1f}{flag}")
        state = "ok" if size.meets_target else ("OVER TARGET" if size.fits else "TOO BIG FOR LAMBDA")
        lines.append(f"{'':<28} {'total':<12} {size.total_bytes / MIB:7.1f} {size.target * LIMIT / MIB:7.1f}  "
                     f"{size.total_bytes / LIMIT:.0%} of {LIMIT / MIB:.0f} MiB, target {size.target:.0%}: {state}")
    return "\n".join(lines)
