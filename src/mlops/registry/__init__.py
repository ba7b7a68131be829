"""The model registry: versions, aliases, runs and the rollout's and drift_check's records, on one DynamoDB table;
manifests (lineage)."""
