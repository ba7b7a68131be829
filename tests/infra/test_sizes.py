"""Every zip function fits Lambda's 250 MiB (code + layers, unzipped) and its own target (infra/sizes.py TARGETS), and
each of its parts (its code, each layer) its budget, measured on what the synthesized template deploys: the bundled
code it points at and the built layers (layers/builder.py) it references. Prints the table, part by part, in the
run's summary; it is also in the failure messages and in `make bench` (bench/bench_sizes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from infra import sizes
from infra.constructs.function import FUNCTION_TAG
from infra.constructs.serving import MODEL_TAG
from mlops.aws import platform

Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name


@pytest.fixture(scope="session")
def deployed_sizes(synthesized: Synthesized) -> list[sizes.FunctionSize]:
    built = {synthesized.logical_id(layer): name for name, layer in synthesized.stack.packaging.built_layers.items()}
    found = []
    for _lid, resource in synthesized.of_type("AWS::Lambda::Function").items():
        props = resource["Properties"]
        tags = {t["Key"]: t["Value"] for t in props.get("Tags", [])}
        if FUNCTION_TAG not in tags or "Layers" not in props:
            continue  # aws-cdk-lib's own deploy-time functions, and the image functions
        name = f"{tags[FUNCTION_TAG]} ({tags[MODEL_TAG]})" if MODEL_TAG in tags else tags[FUNCTION_TAG]
        # every layer a function references is one built here, so that this test measures all of it
        layers = [built[layer["Ref"]] for layer in props["Layers"]]
        found.append(sizes.measure(name, synthesized.file_asset(props["Code"]["S3Key"]), layers))
    return found


def test_every_zip_function_fits_in_250_mib_unzipped(deployed_sizes: list[sizes.FunctionSize],
                                                    reports: dict[str, str]) -> None:
    report = sizes.table(deployed_sizes)
    reports["Lambda zip functions: code + layers, unzipped, part by part (MiB)"] = report
    assert {size.name for size in deployed_sizes} == {spec.name for spec in sizes.zip_specs()}
    assert all(size.fits for size in deployed_sizes), report


def test_each_part_of_a_zip_function_stays_within_its_budget(deployed_sizes: list[sizes.FunctionSize]) -> None:
    """A dependency bump that makes a layer (or the code) heavier than its budget fails here, naming the part."""
    over = [line for size in deployed_sizes for line in size.over_budget()]
    assert not over, "\n".join(over) + "\n\n" + sizes.table(deployed_sizes)


def test_every_zip_function_meets_its_target(deployed_sizes: list[sizes.FunctionSize]) -> None:
    """infer and push within 60% of Lambda's limit, ingest within 75% (issue 15)."""
    missed = [f"{size.function}: {size.total_bytes / sizes.MIB:.1f} MiB is {size.total_bytes / sizes.LIMIT:.0%} of "
              f"Lambda's limit, above its target of {size.target:.0%}; its parts: "
              + ", ".join(f"{part} {value / sizes.MIB:.1f}" for part, value in size.parts.items())
              for size in deployed_sizes if not size.meets_target]
    assert not missed, "\n".join(missed)
    by_name = {size.name: size for size in deployed_sizes}
    assert by_name["infer"].target == by_name["push"].target == 0.60
    assert by_name["ingest"].target == 0.75


def test_a_functions_budgets_add_up_to_no_more_than_its_target() -> None:
    """So that no function outgrows its target unnoticed: one of its parts would outgrow its budget first."""
    for spec in sizes.zip_specs():
        size = sizes.FunctionSize(spec.name, 0, {name: 0 for name in (sizes.POWERTOOLS, *spec.layers)})
        budgets = sum(sizes.budget_bytes(part) for part in size.parts)
        assert budgets <= size.target * sizes.LIMIT, (spec.name, budgets / sizes.MIB, size.target)


def test_the_budget_check_names_the_part_that_grew() -> None:
    grown = sizes.FunctionSize("ingest", 2**19, {sizes.POWERTOOLS: 10 * sizes.MIB, "data": 180 * sizes.MIB})
    assert grown.over_budget() == ["ingest: data is 180.0 MiB, over its budget of 174 MiB"]
    assert not grown.meets_target
    assert "OVER BUDGET" in sizes.table([grown])
    with pytest.raises(KeyError, match="no size budget for 'gpu'"):
        sizes.FunctionSize("infer", 0, {"gpu": 1}).over_budget()


def test_sizes_count_every_layer_a_function_has(deployed_sizes: list[sizes.FunctionSize]) -> None:
    by_name = {size.function.split(" ")[0]: size for size in deployed_sizes}
    for spec in sizes.zip_specs():
        size = by_name[spec.name]
        assert list(size.layer_bytes) == [sizes.POWERTOOLS, *spec.layers], spec.name
        assert list(size.parts) == [sizes.CODE, sizes.POWERTOOLS, *spec.layers], spec.name
        assert all(value > 2**20 for value in size.layer_bytes.values()), size  # real content, not a stub
        assert size.code_bytes > 0


def test_the_bench_measures_the_same_bundles(deployed_sizes: list[sizes.FunctionSize]) -> None:
    """bench/bench_sizes.py bundles without a synthesis: the same sizes as the synthesized assets."""
    from infra.app import CONFIG_CONTEXT, cdk_json_context

    measured = {s.function: s for s in sizes.platform_sizes(platform.ROOT / cdk_json_context()[CONFIG_CONTEXT])}
    for size in deployed_sizes:
        bench = measured[size.function.split(" ")[0]]
        assert bench.layer_bytes == size.layer_bytes, size.function
        # the same files, give or take an edit of src/mlops between the synthesis and now
        assert abs(bench.code_bytes - size.code_bytes) < 2**20, size.function
