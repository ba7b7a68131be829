"""Each zip function's unzipped size (its code bundled as the CDK app bundles it, plus its built layers) against
Lambda's 250 MiB limit for code + layers. Builds the layers first if they are missing (layers/builder.py: PyPI)."""

from __future__ import annotations

from bench.harness import Result
from infra import sizes
from layers.builder import LAMBDA_UNZIPPED_LIMIT
from mlops.aws.platform import ROOT
from mlops.core.config import CONFIG_FILE


def run(quick: bool) -> list[Result]:
    del quick  # nothing to shrink: one measurement per function
    limit = LAMBDA_UNZIPPED_LIMIT / sizes.MIB
    return [
        Result(
            benchmark=f"{size.function}: code + layers, unzipped",
            value=round(size.total_bytes / sizes.MIB, 1),
            reference_name="Lambda's limit",
            reference=limit,
            unit="MiB",
            target="ratio <= 1",
            passed=size.fits,
            details={"code_mib": round(size.code_bytes / sizes.MIB, 2),
                     **{f"{name}_layer_mib": round(value / sizes.MIB, 1) for name, value in size.layer_bytes.items()}},
        )
        for size in sizes.platform_sizes(ROOT / CONFIG_FILE)
    ]
