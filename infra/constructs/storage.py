"""Where the platform keeps its state: the buckets, tables and topic of ``mlops.aws.platform``, all encrypted with
one customer-managed key and reachable over TLS only.

Construct ids are the platform's names (``data``, ``registry``, ``notifications``...), so a resource is found
by the same name in the code, the local cloud and the template; physical names are left to CloudFormation, so that
a stage deleted with its data retained (prod) can be created again beside what it left.

A stage that deletes its data (dev, RemovalPolicy.DESTROY) empties its buckets first: CloudFormation cannot delete
a bucket that still holds objects or versions. What the pipeline's lineage points at (curated datasets, contracts,
registered models) is writable only by the roles that produce it, whatever IAM grants elsewhere (``protect``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from aws_cdk import Duration, RemovalPolicy, Stack
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_iam as iam
from aws_cdk import aws_kms as kms
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_sns as sns
from constructs import Construct

from mlops.aws import platform

# Intermediate artefacts: register copies an accepted candidate under models/<model>/runs/, so what stays under
# candidates/ only serves debugging a recent run.
CANDIDATES_EXPIRE_AFTER = Duration.days(30)
NONCURRENT_VERSIONS_EXPIRE_AFTER = Duration.days(90)
ACCESS_LOGS_EXPIRE_AFTER = Duration.days(365)
# What a model version's lineage points at: only the role that produces it may write there (the stack names the
# roles from mlops.aws.access). Anyone else's write would change what a registered model claims it was trained on.
PROTECTED_PREFIXES: Mapping[str, tuple[str, ...]] = {"data": ("curated/", "contracts/"), "models": ("models/",)}
# Every action that creates, overwrites or removes an object or an upload in progress (multipart uploads and
# copies are authorized as s3:PutObject)
OBJECT_WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload")
# aws-cdk-lib's singleton provider that empties a bucket with auto_delete_objects before CloudFormation deletes it
AUTO_DELETE_PROVIDER = "Custom::S3AutoDeleteObjectsCustomResourceProvider"


class Storage(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, removal_policy: RemovalPolicy) -> None:
        super().__init__(scope, construct_id)
        # aws-cdk-lib allows emptying only a bucket CloudFormation deletes; one it retains keeps its objects
        self.auto_delete_objects = removal_policy == RemovalPolicy.DESTROY
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
            auto_delete_objects=self.auto_delete_objects,
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
            auto_delete_objects=self.auto_delete_objects,
        )

    def protect(self, bucket_name: str, writers: Mapping[str, Sequence[iam.IRole]]) -> None:
        """Deny writing and deleting objects under each prefix of `writers` to every principal but the given roles.
        A Deny in the bucket policy wins over any Allow, an administrator's included (the account's root user can
        still remove the bucket policy). aws-cdk-lib's notifications handler only writes the bucket's notification
        configuration, which this does not touch; its auto-delete provider deletes every object of a bucket being
        deleted, so its role is let through too."""
        bucket = self.buckets[bucket_name]
        exempt = [self._auto_delete_role_arn()] if self.auto_delete_objects else []
        for prefix, roles in sorted(writers.items()):
            if not roles:
                raise ValueError(f"no role may write {prefix} in the {bucket_name} bucket (mlops.aws.access): then "
                                 "nothing could")
            bucket.add_to_resource_policy(iam.PolicyStatement(
                sid=f"OnlyItsWritersWrite{''.join(part.capitalize() for part in prefix.strip('/').split('/'))}",
                effect=iam.Effect.DENY,
                principals=[iam.AnyPrincipal()],
                actions=list(OBJECT_WRITES),
                resources=[bucket.arn_for_objects(f"{prefix}*")],
                conditions={"ArnNotEquals": {"aws:PrincipalArn": [*(r.role_arn for r in roles), *exempt]}},
            ))

    def _auto_delete_role_arn(self) -> str:
        provider = Stack.of(self).node.try_find_child(AUTO_DELETE_PROVIDER)
        if provider is None:
            raise LookupError(f"no {AUTO_DELETE_PROVIDER}: aws-cdk-lib names its auto-delete provider otherwise")
        role_arn: str = provider.role_arn  # type: ignore[attr-defined]
        return role_arn

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
