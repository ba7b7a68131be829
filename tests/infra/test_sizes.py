"""Every zip function fits Lambda's 250 MiB (code + layers, unzipped), measured on what the synthesized template
deploys: the bundled code it points at and the built layers (layers/builder.py) it references. Prints the table
in the run's summary; it is also in the failure message and in `make bench` (bench/bench_sizes.py)."""

from __future__ import annotations

from typing import Any

import pytest

from infra import sizes
from infra.constructs.function import FUNCTION_TAG
from infra.constructs.serving import MODEL_TAG
from layers import builder as layer_build
from mlops.aws import platform

Synthesized = Any  # conftest.Synthesized: conftest modules cannot be imported by name


@pytest.fixture(scope="session")
def deployed_sizes(synthesized: Synthesized) -> list[sizes.FunctionSize]:
    # the Powertools mirror is built only for measuring: the stack references the public layer
    layer_build.ensure([sizes.POWERTOOLS])
    built = {synthesized.logical_id(layer): name for name, layer in synthesized.stack.packaging.built_layers.items()}
    found = []
    for _lid, resource in synthesized.of_type("AWS::Lambda::Function").items():
        props = resource["Properties"]
        tags = {t["Key"]: t["Value"] for t in props.get("Tags", [])}
        if FUNCTION_TAG not in tags or "Layers" not in props:
            continue  # aws-cdk-lib's own deploy-time functions, and the image functions
        name = f"{tags[FUNCTION_TAG]} ({tags[MODEL_TAG]})" if MODEL_TAG in tags else tags[FUNCTION_TAG]
        layers = [built.get(layer["Ref"], sizes.POWERTOOLS) for layer in props["Layers"]]
        found.append(sizes.measure(name, synthesized.file_asset(props["Code"]["S3Key"]), layers))
    return found


def test_every_zip_function_fits_in_250_mib_unzipped(deployed_sizes: list[sizes.FunctionSize],
                                                    reports: dict[str, str]) -> None:
    report = sizes.table(deployed_sizes)
    reports["Lambda zip functions: code + layers, unzipped (MiB)"] = report
    assert {size.function.split(" ")[0] for size in deployed_sizes} == {spec.name for spec in sizes.zip_specs()}
    assert all(size.fits for size in deployed_sizes), report


def test_sizes_count_every_layer_a_function_has(deployed_sizes: list[sizes.FunctionSize]) -> None:
    by_name = {size.function.split(" ")[0]: size for size in deployed_sizes}
    for spec in sizes.zip_specs():
        size = by_name[spec.name]
        assert list(size.layer_bytes) == [sizes.POWERTOOLS, *spec.layers], spec.name
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
