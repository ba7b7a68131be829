"""AWS plumbing: clients (the one place they are created), the resources a function finds in its environment,
the platform's declaration (what is deployed, what each role may do), S3 storage, handler observability.

``client`` and ``region`` are this package's own: ``from mlops import aws; aws.client("s3")``."""

from mlops.aws.clients import client, region

__all__ = ["client", "region"]
