"""``mlops features``: the feature store from the command line.

    mlops features training-set <name> --data FILE --out FILE   the point-in-time training set of a file (no cloud)
    mlops features get <name> <entity> [--json]                  an entity's online features
    mlops features materialize <name>                            the online store again from the newest curated data

Against AWS (the stack's `Environment` output: DATA_BUCKET, FEATURES_TABLE) or the local cloud when
AWS_ENDPOINT_URL points at it. Exit codes follow ``mlops.cli.main``: 0 done, 1 not found, 2 bad input.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlops.cli.common import add_config_option, load_project, resource_name
from mlops.core.errors import MlopsError


def add_feature_commands(sub: Any) -> None:
    features = sub.add_parser("features", help="the feature store: training sets, online lookups, materialisation")
    actions = features.add_subparsers(dest="features_command", required=True)
    offline = actions.add_parser("training-set", help="a file's point-in-time training set, as the pipeline builds it")
    offline.add_argument("name", help="the model's name (as declared in mlops.toml, with [model.features])")
    offline.add_argument("--data", required=True, help="a CSV or Parquet file with the model's columns")
    offline.add_argument("--out", required=True, help="where to write it (.csv or .parquet)")
    get = actions.add_parser("get", help="an entity's features in the online store")
    get.add_argument("name")
    get.add_argument("entity", help="the entity id")
    get.add_argument("--json", action="store_true")
    again = actions.add_parser("materialize", help="write the online store from the model's newest curated dataset")
    again.add_argument("name")
    for parser in (offline, get, again):
        add_config_option(parser)
        parser.set_defaults(func=run_features)


def _model(args: argparse.Namespace) -> Any:
    config = load_project(args)
    model = config.model(args.name)
    if model.features is None:
        raise MlopsError(f"{args.name} declares no features; add a [model.features] table to mlops.toml "
                         "(see docs/features.md)")
    return config, model


def run_features(args: argparse.Namespace) -> int:
    from mlops import aws
    from mlops.features.offline import materialize
    from mlops.features.online import OnlineStore, entity_text

    config, model = _model(args)
    if args.features_command == "training-set":
        return _training_set(model, Path(args.data), Path(args.out))
    bucket, table = resource_name("data", config.project), resource_name("features", config.project)
    online = OnlineStore(aws.client("dynamodb"), table)
    if args.features_command == "get":
        found = online.get(model.name, entity_text(args.entity))
        if found is None:
            print(f"{model.name}: no entity {entity_text(args.entity)!r} in the online store")
            return 1
        if args.json:
            print(json.dumps(found.__dict__, indent=2))
        else:
            print(f"{model.name} entity {found.entity_id} as of {found.as_of} (dataset {found.dataset_sha256[:12]})")
            for name, value in found.values.items():
                print(f"  {name:<30} {value}")
        return 0
    from mlops.aws.storage import ObjectStore
    from mlops.data.curated import newest_manifest

    data = ObjectStore(aws.client("s3"), bucket)
    manifest = newest_manifest(data, model.name)
    if manifest is None:
        print(f"{model.name}: no curated dataset yet; upload a CSV under incoming/{model.name}/")
        return 1
    print(json.dumps(materialize(model, manifest, data=data, online=online), indent=2))
    return 0


def _training_set(model: Any, source: Path, out: Path) -> int:
    import pandas as pd

    from mlops.data.inference import infer_contract
    from mlops.features.offline import training_set

    if not source.is_file():
        raise MlopsError(f"--data {source}: no such file")
    frame = pd.read_parquet(source) if source.suffix == ".parquet" else pd.read_csv(source)
    if model.target is not None and model.target not in frame.columns:
        raise MlopsError(f"--data {source}: no column {model.target!r} (the model's target)")
    table, contract = training_set(frame, infer_contract(frame, model.target), model.features)
    if out.suffix == ".parquet":
        table.to_parquet(out, index=False)
    else:
        table.to_csv(out, index=False)
    print(f"{len(table)} rows, features {[c.name for c in contract.feature_columns]} -> {out}")
    return 0
