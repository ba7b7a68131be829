"""Releasing a model version: deploying it behind the live alias, promote/rollback, the canary's statistics, the
rollout, its guardrails and status."""
