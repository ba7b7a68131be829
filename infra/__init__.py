"""The CDK app of serverless-mlops (``infra/app.py``); it reads the platform from ``mlops.aws.platform``."""
