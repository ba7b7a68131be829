"""The platform's key prefixes are declared once (mlops.core.layout): every prefix a role is granted is one of them,
so the prefixes a declared batch input may not use are the ones the platform really keeps."""

from __future__ import annotations

from mlops.aws.access import ACCESS, infer_access, push_access
from mlops.aws.platform import ROOT, push_queues
from mlops.core import layout
from mlops.core.config import load_config


def test_every_granted_prefix_is_a_declared_one() -> None:
    config = load_config(ROOT / "mlops.toml")
    accesses = [*ACCESS.values(), *(infer_access(m.name) for m in config.models),
                *(push_access(q) for q in push_queues(config))]
    granted = {prefix.split("/", 1)[0] + "/" for access in accesses for side in (access.read, access.write)
               for prefixes in side.values() for prefix in prefixes}
    assert granted
    assert granted <= set(layout.RESERVED), granted - set(layout.RESERVED)
