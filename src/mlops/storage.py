"""Object storage behind a small class that takes an injected S3 client."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from mlops.errors import RegistryConflict

if TYPE_CHECKING:
    import pandas as pd


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


class ObjectStore:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket

    def uri(self, key: str) -> str:
        return s3_uri(self.bucket, key)

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id else {}
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)["Body"].read()
        return body

    def head(self, key: str) -> dict[str, Any] | None:
        try:
            head: dict[str, Any] = self.s3.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        return head

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def put_bytes(self, key: str, data: bytes, *, content_type: str = "application/octet-stream",
                  create_only: bool = False) -> None:
        """``create_only`` makes the write conditional: an immutable object is never overwritten."""
        extra = {"IfNoneMatch": "*"} if create_only else {}
        try:
            self.s3.put_object(Bucket=self.bucket, Key=key, Body=data, ContentType=content_type, **extra)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in ("PreconditionFailed", "ConditionalRequestConflict"):
                # The same bytes are already there: our own earlier attempt (its answer lost, the SDK retried),
                # or a replay of the same step. Only different content is a conflict.
                if self.get_bytes(key) == data:
                    return
                raise RegistryConflict(f"{self.uri(key)} already exists and is immutable") from exc
            raise

    def put_json(self, key: str, value: Any, *, create_only: bool = False) -> None:
        data = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
        self.put_bytes(key, data, content_type="application/json", create_only=create_only)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def put_parquet(self, key: str, frame: pd.DataFrame) -> bytes:
        buffer = io.BytesIO()
        frame.to_parquet(buffer, index=False)
        data = buffer.getvalue()
        self.put_bytes(key, data, content_type="application/vnd.apache.parquet")
        return data

    def get_parquet(self, key: str) -> pd.DataFrame:
        import pandas as pd

        return pd.read_parquet(io.BytesIO(self.get_bytes(key)))

    def json_lines(self, key: str) -> Iterator[Any]:
        """The JSON values of an object of JSON lines (Firehose's captures), streamed; blank lines skipped."""
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        for line in body.iter_lines():
            if line.strip():
                yield json.loads(line)

    def keys(self, prefix: str) -> Iterator[str]:
        paginator = self.s3.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"]

    def delete(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            chunk = keys[start : start + 1000]
            if chunk:
                self.s3.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in chunk]})
