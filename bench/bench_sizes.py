"""Each zip function's unzipped size (its code bundled as the CDK app bundles it, plus its built layers) against
Lambda's 250 MiB limit for code + layers, and its target as a share of it (infra/sizes.py TARGETS: infer and push
60%, ingest 75%), with each part and its budget. Builds the layers first if they are missing (layers/builder.py:
PyPI)."""

from __future__ import annotations

from bench.harness import Result
from infra import sizes
from mlops.aws.platform import ROOT
from mlops.core.config import CONFIG_FILE


def run(quick: bool) -> list[Result]:
    del quick  # nothing to shrink: one measurement per function
    limit = sizes.LIMIT / sizes.MIB
    return [
        Result(
            benchmark=f"{size.function}: code + layers, unzipped",
            value=round(size.total_bytes / sizes.MIB, 1),
            reference_name="Lambda's limit",
            reference=limit,
            unit="MiB",
            target=f"ratio <= {size.target:g}",
            passed=size.meets_target and not size.over_budget(),
            details={**{f"{part}_mib": round(value / sizes.MIB, 2) for part, value in size.parts.items()},
                     **{f"{part}_budget_mib": sizes.BUDGETS_MIB[part] for part in size.parts}},
        )
        for size in sizes.platform_sizes(ROOT / CONFIG_FILE)
    ]
