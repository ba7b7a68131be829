"""record_outcome: a rejected candidate or a failed run, recorded in the registry for people (no version is created).
What the record_outcome zip function runs: no pandas, no scikit-learn."""

from __future__ import annotations

import json
from typing import Any

from mlops.pipeline.inputs import PipelineInput
from mlops.registry.store import Registry


def record_outcome(inp: PipelineInput, *, outcome: str, registry: Registry, evaluation: dict[str, Any] | None,
                   error: dict[str, Any] | None) -> dict[str, Any]:
    """A rejected candidate or a failed run: recorded in the registry (no version is created) for people."""
    if outcome == "rejected":
        reasons = (evaluation or {}).get("reasons") or ["rejected by the gate"]
        reason = "; ".join(reasons)
        details: dict[str, Any] = {"metrics": (evaluation or {}).get("candidate", {}).get("metrics"),
                                   "champion": (evaluation or {}).get("champion")}
    else:
        error = error or {}
        cause = error.get("Cause", "")
        try:
            parsed = json.loads(cause)
            cause = f"{parsed.get('errorType', '')}: {parsed.get('errorMessage', cause)}"
        except (TypeError, ValueError):
            pass
        reason = f"{error.get('Error', 'Error')}: {cause}".strip()
        details = {"error": error.get("Error"), "cause": cause}
    registry.record_run(inp.model, inp.run_id, outcome, reason, {
        **details, "dataset_sha256": inp.dataset.sha256,
        "training_backend": {"backend": inp.training_backend, "reason": inp.training_backend_reason}})
    return {"outcome": outcome, "reason": reason,
            "subject": f"[mlops] {inp.model}: training run {outcome}"[:100],
            "message": f"Model {inp.model}, run {inp.run_id} ({inp.reason}) was {outcome}: {reason}"}
