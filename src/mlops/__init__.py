"""serverless-mlops core package."""
