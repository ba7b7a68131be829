"""Clustering (task = "clustering", family kmeans): its configuration without a target, its contract, training, the
parity gate of its ONNX graph, its metrics, what serving answers, the gate on undefined metrics, the guardrail-only
rollout and how its looks are shown."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd
import pytest
from pydantic import ValidationError
from sklearn import metrics as skm

from mlops.core.config import ModelConfig
from mlops.core.errors import ConfigError, InvalidDataset, ParityError
from mlops.core.tasks import CLASSIFICATION_METRICS, CLUSTERING_METRICS, REGRESSION_METRICS, Task
from mlops.data.inference import infer_contract
from mlops.data.schema import ColumnSpec, DataContract
from mlops.drift.statistics import ConceptDrift
from mlops.pipeline.steps import gate
from mlops.release.deploy import Split
from mlops.release.guardrails import GUARDRAILS_ONLY, ArmHealth, guardrail_only_decision
from mlops.release.overview import _rollout
from mlops.release.rollout import RolloutState, analyze
from mlops.release.status import ab_status, render_html, render_table
from mlops.serving.onnx_model import OnnxModel, Prediction
from mlops.serving.scoring import score
from mlops.training import clustering
from mlops.training.clustering import cluster_parity, clustering_metrics, evaluation_space
from mlops.training.evaluation import evaluate
from mlops.training.onnx_export import PARITY_TOL, check_parity, to_onnx
from mlops.training.train import train

CENTRES = np.array([[0.0, 0.0], [6.0, 6.0], [0.0, 8.0]])


def blobs(n: int = 150, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    group = rng.integers(0, 3, size=n)
    xy = CENTRES[group] + rng.normal(0, 0.7, size=(n, 2))
    return pd.DataFrame({"x": xy[:, 0], "y": xy[:, 1], "shop": np.where(group == 1, "online", "street")})


def model(**fields: Any) -> ModelConfig:
    return ModelConfig.model_validate({"name": "segments", "task": "clustering", **fields})


@pytest.fixture(scope="module")
def trained() -> tuple[Any, DataContract, bytes]:
    frame = blobs()
    contract = infer_contract(frame.astype(str), None)
    result = train(frame, contract, model(params={"n_clusters": 3}))
    return result, contract, to_onnx(result.pipeline, contract, Task.CLUSTERING)


# -- configuration and contract ---------------------------------------------------------------------------------
def test_a_clustering_model_has_no_target_and_gets_kmeans_and_the_silhouette() -> None:
    cfg = model()
    assert (cfg.target, cfg.family, cfg.primary_metric) == (None, "kmeans", "silhouette")
    assert Task.CLUSTERING.metrics == CLUSTERING_METRICS == ("silhouette", "calinski_harabasz", "neg_davies_bouldin")
    assert Task.BINARY.metrics == CLASSIFICATION_METRICS
    assert Task.REGRESSION.metrics == REGRESSION_METRICS
    assert not Task.CLUSTERING.is_classification
    assert not Task.CLUSTERING.has_labels
    assert all(task.has_labels for task in (Task.BINARY, Task.MULTICLASS, Task.REGRESSION))
    assert model(thresholds={"neg_davies_bouldin": -1.0}, primary_metric="calinski_harabasz").primary_metric \
        == "calinski_harabasz"


@pytest.mark.parametrize(("fields", "says"), [
    ({"target": "y"}, "a clustering model has no target"),
    ({"family": "random_forest"}, "cannot be trained for a clustering model"),
    ({"thresholds": {"accuracy": 0.9}}, "metric 'accuracy' does not apply to a clustering model"),
    ({"primary_metric": "r2"}, "metric 'r2' does not apply to a clustering model"),
    ({"rollout_metric": "reward"}, "rollout_metric does not apply to a clustering model"),
    ({"guardrail_min_hours": 80}, "the guardrail-only rollout could never promote"),
])
def test_what_a_clustering_model_cannot_declare(fields: dict[str, Any], says: str) -> None:
    with pytest.raises(ValidationError, match=says):
        model(**fields)


def test_the_other_tasks_still_need_a_target_and_their_own_metrics() -> None:
    with pytest.raises(ValidationError, match="a binary model needs a target"):
        ModelConfig(name="m1")
    with pytest.raises(ValidationError, match="metric 'silhouette' does not apply to a regression model"):
        ModelConfig(name="m1", target="y", task="regression", primary_metric="silhouette")
    # guardrail_min_hours is a guardrail-only rollout's: it does not bind a model tested on feedback
    assert ModelConfig(name="m1", target="y", rollout_max_hours=0.5).guardrail_min_hours == 1.0


def test_a_contract_without_a_target_makes_every_column_a_feature() -> None:
    contract = infer_contract(pd.DataFrame({"a": ["1", "2", ""], "b": ["x", "y", "x"]}), None)
    assert contract.target is None
    assert [c.name for c in contract.feature_columns] == ["a", "b"]
    assert (contract.numeric_features, contract.categorical_features) == (["a"], ["b"])
    assert DataContract.from_json(contract.to_json()) == contract
    # a target, when there is one, is still checked
    with pytest.raises(ValidationError, match="not among the columns"):
        DataContract(target="y", columns=[ColumnSpec(name="a", kind="numeric")])


# -- training and export ----------------------------------------------------------------------------------------
def test_training_keeps_every_row_and_the_splits_hold_the_features_alone(trained: Any) -> None:
    result, _contract, _onnx = trained
    assert result.classes == ["0", "1", "2"]  # the cluster ids
    assert list(result.test_df.columns) == ["x", "y", "shop"]
    assert len(result.train_df) + len(result.test_df) == 150
    assert result.dropped_rows == 0
    assert type(result.pipeline.named_steps["model"]).__name__ == "KMeans"
    assert result.params["n_clusters"] == 3
    assert result.params["random_state"] == 42
    assert result.params["n_init"] == 10  # the catalog's default


def test_more_clusters_than_rows_or_bad_params_are_said_as_such() -> None:
    frame = blobs(30)
    contract = infer_contract(frame.astype(str), None)
    with pytest.raises(InvalidDataset, match="fewer than the 40 clusters"):
        train(frame, contract, model(params={"n_clusters": 40}))
    with pytest.raises(ConfigError):
        train(frame, contract, model(params={"n_clusters": 0}))


def test_the_graph_answers_cluster_ids_and_distances_as_scikit_learn_does(trained: Any) -> None:
    result, contract, onnx_bytes = trained
    report = check_parity(result.pipeline, onnx_bytes, result.test_df, contract, Task.CLUSTERING)
    assert report.label_mismatches == 0
    assert report.max_rel_diff is not None
    assert report.max_abs_diff <= PARITY_TOL
    assert report.tolerance == PARITY_TOL
    onnx = OnnxModel(onnx_bytes)
    assert (onnx.task, onnx.classes, onnx.is_clustering, onnx.is_classifier) == ("clustering", ["0", "1", "2"],
                                                                                 True, False)
    answer = onnx.predict(result.test_df)
    assert answer.distances is not None
    assert answer.distances.shape == (len(result.test_df), 3)
    assert answer.labels.tolist() == [str(i) for i in result.pipeline.predict(result.test_df)]
    # another k-means' graph is not this one's
    other = train(blobs(seed=3), contract, model(params={"n_clusters": 3}, seed=7))
    with pytest.raises(ParityError, match="in the distances to the clusters"):
        check_parity(other.pipeline, onnx_bytes, result.test_df, contract, Task.CLUSTERING)


def test_an_id_differing_on_a_tie_is_not_a_mismatch() -> None:
    distances = np.array([[1.0, 1.0 + 1e-9, 5.0], [0.5, 3.0, 4.0]])
    ids = np.array([0, 0])

    def graph(labels: list[str]) -> Prediction:
        return Prediction(labels=np.asarray(labels), probabilities=None, classes=["0", "1", "2"], distances=distances)

    assert cluster_parity(distances, ids, graph(["1", "0"]), 1e-5) == (0.0, 0.0, 0, 1)
    with pytest.raises(ParityError, match="1 cluster ids differ"):
        cluster_parity(distances, ids, graph(["0", "1"]), 1e-5)


# -- metrics --------------------------------------------------------------------------------------------------
def test_the_metrics_are_scikit_learns_in_a_space_every_model_shares() -> None:
    frame = blobs(90)
    contract = infer_contract(frame.astype(str), None)
    space = evaluation_space(frame, contract)
    assert space.shape == (90, 4)  # x and y standardised, shop one-hot
    assert np.allclose(space[:, :2].mean(axis=0), 0)
    assert np.allclose(space[:, :2].std(axis=0), 1)
    truth = np.argmin(((frame[["x", "y"]].to_numpy()[:, None, :] - CENTRES[None]) ** 2).sum(-1), axis=1)
    got = clustering_metrics(space, truth, seed=1)
    assert got["silhouette"] == pytest.approx(skm.silhouette_score(space, truth))
    assert got["calinski_harabasz"] == pytest.approx(skm.calinski_harabasz_score(space, truth))
    assert got["neg_davies_bouldin"] == pytest.approx(-skm.davies_bouldin_score(space, truth))
    assert got["clusters_found"] == 3
    assert sum(got["cluster_sizes"].values()) == got["rows"] == 90
    shuffled = clustering_metrics(space, np.random.default_rng(0).permutation(truth))
    assert shuffled["silhouette"] < got["silhouette"]
    assert shuffled["neg_davies_bouldin"] < got["neg_davies_bouldin"]
    # one cluster found: no score is defined, none is made up
    single = clustering_metrics(space, np.zeros(90, dtype=int))
    assert (single["silhouette"], single["calinski_harabasz"], single["neg_davies_bouldin"]) == (None, None, None)


def test_missing_and_constant_columns_in_the_metrics_space() -> None:
    frame = pd.DataFrame({"a": [1.0, np.nan, 3.0, 5.0], "b": [2.0] * 4, "c": ["x", "", "x", "y"]})
    contract = DataContract(columns=[ColumnSpec(name="a", kind="numeric", nullable=True),
                                     ColumnSpec(name="b", kind="numeric"),
                                     ColumnSpec(name="c", kind="categorical", nullable=True)])
    space = evaluation_space(frame, contract)
    assert np.isfinite(space).all()
    assert space[1, 0] == space[2, 0]  # imputed with the median
    assert (space[:, 1] == 0).all()  # a constant column moves no row
    assert space[:, 2:].sum(axis=1).tolist() == [1.0] * 4  # "", "x", "y" one-hot


def test_the_silhouette_of_many_rows_is_a_seeded_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(clustering, "SILHOUETTE_MAX_ROWS", 40)
    frame = blobs(200)
    space = evaluation_space(frame, infer_contract(frame.astype(str), None))
    labels = (frame["x"] > 3).astype(int).to_numpy()
    first, again = clustering_metrics(space, labels, seed=5), clustering_metrics(space, labels, seed=5)
    assert first["silhouette"] == again["silhouette"]
    assert first["silhouette"] == pytest.approx(skm.silhouette_score(space, labels.astype(str), sample_size=40,
                                                                     random_state=5))
    assert first["silhouette"] != clustering_metrics(space, labels, seed=6)["silhouette"]


def test_evaluate_measures_the_graph_on_the_held_out_rows(trained: Any) -> None:
    result, contract, onnx_bytes = trained
    evaluation = evaluate(OnnxModel(onnx_bytes), result.test_df, contract, Task.CLUSTERING, repeats=5)
    assert evaluation["task"] == "clustering"
    assert evaluation["metrics"]["silhouette"] > 0.5
    assert evaluation["metrics"]["clusters_found"] == 3


def test_the_gate_on_a_metric_undefined_on_the_rows() -> None:
    cfg = model(thresholds={"silhouette": 0.2})
    undefined = {"silhouette": None, "calinski_harabasz": None, "neg_davies_bouldin": None}
    verdict = gate(cfg, undefined, {"version": 1, "metrics": {"silhouette": 0.6}})
    assert (verdict["meets_thresholds"], verdict["beats_champion"]) == (False, False)
    assert "silhouette undefined is worse than champion v1" in verdict["reasons"][-1]
    # a champion whose silhouette is undefined sets no floor
    assert gate(cfg, {"silhouette": 0.4}, {"version": 1, "metrics": {"silhouette": None}})["beats_champion"]
    assert not gate(cfg, {"silhouette": 0.4}, {"version": 1, "metrics": {"silhouette": 0.6}})["beats_champion"]


# -- serving ------------------------------------------------------------------------------------------------
def test_an_answer_is_a_cluster_id_with_its_distances(trained: Any) -> None:
    _result, _contract, onnx_bytes = trained
    onnx = OnnxModel(onnx_bytes)
    [near, far] = score(onnx, [{"x": 6.0, "y": 6.0, "shop": "online"}, {"x": 1e300, "y": 1e300, "shop": "street"}])
    assert near is not None
    assert near["probabilities"] is None
    assert set(near["distances"]) == {"0", "1", "2"}
    assert near["prediction"] == min(near["distances"], key=near["distances"].get)
    assert far is None  # no finite answer for values the model's arithmetic overflows on
    # a batch run writes the cluster id as text and the distance to every cluster
    from types import SimpleNamespace

    from mlops.batch.run import added_columns

    columns = added_columns(SimpleNamespace(model=onnx))  # type: ignore[arg-type]
    assert list(columns) == ["prediction", "distance_0", "distance_1", "distance_2", "model_version"]
    assert str(columns["prediction"]) == "string"


# -- rollout: the guardrails alone --------------------------------------------------------------------------------
def _health(champion: float, challenger: float, *, errors: float = 0.0, p95: float = 2.0) -> dict[str, Any]:
    return {"champion": ArmHealth(champion, 0.0, 2.0).to_dict(),
            "challenger": ArmHealth(challenger, errors, p95).to_dict()}


def test_a_guardrail_only_decision_waits_for_traffic_and_time_then_promotes() -> None:
    limits = {"min_requests": 200, "min_hours": 1.0, "max_hours": 72.0}
    action, reason = guardrail_only_decision(_health(900, 50), elapsed_hours=2.0, **limits)
    assert action == "continue"
    assert reason.startswith("guardrail-only rollout (a clustering has no feedback labels: no quality test")
    assert "waiting for 200 requests" in reason
    action, reason = guardrail_only_decision(_health(900, 250), elapsed_hours=0.5, **limits)
    assert action == "continue"
    assert "waiting for 1 h" in reason
    action, reason = guardrail_only_decision(_health(900, 250), elapsed_hours=1.5, **limits)
    assert action == "promote"
    assert "within the guardrails" in reason
    assert "250 requests" in reason
    action, reason = guardrail_only_decision(_health(900, 50), elapsed_hours=80.0, **limits)
    assert action == "stop_no_difference"
    assert "keep the champion" in reason
    action, reason = guardrail_only_decision({}, elapsed_hours=2.0, **limits)
    assert action == "continue"
    assert "no serving metrics to read" in reason


class _Registry:
    def __init__(self) -> None:
        self.looks: list[dict[str, Any]] = []

    def aliases(self, model: str) -> dict[str, int]:
        return {"champion": 1, "challenger": 2}

    def acquire_lock(self, model: str, owner: str, ttl_seconds: int = 900) -> bool:
        return True

    def release_lock(self, model: str, owner: str) -> None:
        pass

    def record_look(self, model: str, challenger: int, look: dict[str, Any]) -> None:
        self.looks.append({**look, "challenger": challenger})


class _Lifecycle:
    def __init__(self) -> None:
        self.moves: list[tuple[str, str]] = []

    def promote(self, model: str, *, who: str, why: str, lock_owner: str) -> None:
        self.moves.append(("promote", why))

    def rollback(self, model: str, *, who: str, why: str, lock_owner: str) -> None:
        self.moves.append(("rollback", why))


class _Metrics:
    def __init__(self, health: dict[str, Any]) -> None:
        self.arms = {1: ArmHealth(**{k: health["champion"][k] for k in ("requests", "server_errors", "p95_ms")}),
                     2: ArmHealth(**{k: health["challenger"][k] for k in ("requests", "server_errors", "p95_ms")})}

    def health(self, model: str, versions: tuple[int, ...], since: datetime, until: datetime) -> dict[int, ArmHealth]:
        return self.arms


def _analyze(health: dict[str, Any], **fields: Any) -> tuple[dict[str, Any], _Registry, _Lifecycle]:
    registry, lifecycle = _Registry(), _Lifecycle()
    state = RolloutState(model="segments", champion=1, challenger=2,
                         started_at=(datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="seconds"))
    out = analyze(state, model_cfg=model(guardrail_min_requests=100, **fields), registry=registry,  # type: ignore[arg-type]
                  lifecycle=lifecycle, captures=None, lock_owner="segments-v2-rollout",  # type: ignore[arg-type]
                  health=_Metrics(health))  # type: ignore[arg-type]
    return out, registry, lifecycle


def test_a_clustering_rollout_decides_on_the_guardrails_and_records_its_looks() -> None:
    out, registry, lifecycle = _analyze(_health(400, 150))
    assert (out["action"], out["test"]) == ("promote", None)
    assert lifecycle.moves[0][0] == "promote"
    [look] = registry.looks
    assert (look["metric"], look["guardrail_only"], look["n_control"], look["n_treatment"]) == (GUARDRAILS_ONLY, True,
                                                                                               400, 150)
    assert look["p_value"] is None
    assert look["health"]["challenger"]["requests"] == 150
    # a breached guardrail rolls back whatever the traffic
    out, _registry, lifecycle = _analyze(_health(400, 150, errors=30))
    assert out["action"] == "rollback"
    assert out["reason"].startswith("guardrail breached: error rate")
    out, _registry, lifecycle = _analyze(_health(400, 20))
    assert out["action"] == "continue"
    assert not lifecycle.moves

    # how `mlops ab status` and `mlops status` show it
    recorded = [{**look, "action": "continue", "at": "2030-01-01T00:00:00+00:00"},
                {**look, "at": "2030-01-01T00:00:05+00:00"}]

    class Looks:
        def looks(self, model: str, challenger: int | None = None) -> list[dict[str, Any]]:
            return recorded

        def aliases(self, model: str) -> dict[str, int]:
            return {"champion": 2}

    status = ab_status(Looks(), Split("2", None, 0.0), "segments")  # type: ignore[arg-type]
    assert status["guardrail_only"] is True
    assert status["state"] == "promote"
    table = render_table(status)
    assert "guardrails only: a clustering has no feedback labels to test on" in table
    assert "req champ" in table
    assert "   400" in table
    page = render_html(status)
    assert "p95 latency per arm (ms)" in page
    assert "guardrail-only rollout" in page
    line = _rollout({"rollout": {"challenger": 2, "looks": 2, "last_look": look},
                     "split": Split("1", "2", 0.5).to_dict()})
    assert "guardrails only, no feedback labels to test on; requests 400/150" in line


def test_the_concept_of_a_model_without_labels_is_said_not_measured() -> None:
    concept = ConceptDrift.not_measured("a clustering model has no labels")
    assert (concept.status, concept.drifted, concept.value, concept.reason) == ("skipped", False, None,
                                                                               "a clustering model has no labels")
