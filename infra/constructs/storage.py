"""Where the platform keeps its state: the buckets, tables and topic of ``mlops.platform``, all encrypted with
one customer-managed key and reachable over TLS only.

Construct ids are the platform's names (``data``, ``registry``, ``notifications``...), so a resource is found
by the same name in the code, the local cloud and the template; physical names are left to CloudFormation.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from mlops import platform

# Intermediate artefacts: register copies an accepted candidate under models/<model>/runs/, so what stays under
# candidates/ only serves debugging a recent run.
CANDIDATES_EXPIRE_AFTER = Duration.days(30)
NONCURRENT_VERSIONS_EXPIRE_AFTER = Duration.days(90)
ACCESS_LOGS_EXPIRE_AFTER = Duration.days(365)


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        self.key = kms.Key(
            self, "Key", enable_key_rotation=True, removal_policy=removal_policy,
            description="serverless-mlops: data, models, registry, notifications and failure queues at rest",
        )
        self.access_logs = s3.Bucket(
            self, "AccessLogs",
            # S3 server access logs can only be delivered to a bucket encrypted with SSE-S3, not SSE-KMS.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(id="expire-access-logs", expiration=ACCESS_LOGS_EXPIRE_AFTER)],
            removal_policy=removal_policy,
        )

        self.buckets: dict[str, s3.Bucket] = {
            name: self._bucket(name, removal_policy) for name in platform.BUCKETS
        }
        self.tables: dict[str, dynamodb.Table] = {
            name: self._table(name, platform.TABLE_KEYS[name], removal_policy) for name in platform.TABLES
        }
        self.topic = sns.Topic(self, platform.TOPIC, master_key=self.key, enforce_ssl=True)

    def _bucket(self, name: str, removal_policy: RemovalPolicy) -> s3.Bucket:
        rules = [
            s3.LifecycleRule(
                id="expire-old-versions",
                noncurrent_version_expiration=NONCURRENT_VERSIONS_EXPIRE_AFTER,
                abort_incomplete_multipart_upload_after=Duration.days(7),
            ),
        ]
        if name == "models":
            rules.append(s3.LifecycleRule(id="expire-candidates", prefix="candidates/",
                                          expiration=CANDIDATES_EXPIRE_AFTER))
        return s3.Bucket(
            self, name,
            encryption=s3.BucketEncryption.KMS,
            encryption_key=self.key,
            # one data key per bucket instead of one KMS call per object
            bucket_key_enabled=True,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            # ingest reads the exact object version an event names, and originals are never lost
            versioned=True,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix=f"{name}/",
            lifecycle_rules=rules,
            removal_policy=removal_policy,
        )

    def _table(self, name: str, key: platform.TableKey, removal_policy: RemovalPolicy) -> dynamodb.Table:
        return dynamodb.Table(
            self, name,
            partition_key=dynamodb.Attribute(name=key.partition, type=dynamodb.AttributeType.STRING),
            sort_key=dynamodb.Attribute(name=key.sort, type=dynamodb.AttributeType.STRING) if key.sort else None,
            billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
            encryption=dynamodb.TableEncryption.CUSTOMER_MANAGED,
            encryption_key=self.key,
            point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
                point_in_time_recovery_enabled=True),
            time_to_live_attribute=key.ttl,
            removal_policy=removal_policy,
        )
