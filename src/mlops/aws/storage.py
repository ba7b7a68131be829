"""Object storage behind a small class that takes an injected S3 client."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError

from mlops.core.errors import RegistryConflict

# put_file: a bigger file goes up in parts of this size (S3 takes 5 MiB to 5 GiB per part, 10,000 parts), so that a
# failed request resends one part; the file's sha256 is kept in its metadata to recognise an earlier attempt's upload
PART_BYTES = 64 * 1024 * 1024
SHA256_METADATA = "sha256"
CONFLICT_CODES = ("PreconditionFailed", "ConditionalRequestConflict")


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, key = uri[5:].split("/", 1)
    return bucket, key


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class ObjectStore:
    def __init__(self, s3: Any, bucket: str) -> None:
        self.s3 = s3
        self.bucket = bucket
        self.invalid_lines = 0  # lines json_lines skipped: not JSON

    def uri(self, key: str) -> str:
        return s3_uri(self.bucket, key)

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        extra = {"VersionId": version_id} if version_id else {}
        body: bytes = self.s3.get_object(Bucket=self.bucket, Key=key, **extra)["Body"].read()
        return body

    def open(self, key: str, version_id: str | None = None, *, start: int | None = None,
             end: int | None = None) -> Any:
        """The object's body as a stream (``read(n)``), or the bytes ``start`` to ``end`` (exclusive) of it."""
        extra: dict[str, Any] = {"VersionId": version_id} if version_id else {}
        if start is not None or end is not None:
            extra["Range"] = f"bytes={start or 0}-{'' if end is None else end - 1}"
        return self.s3.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]

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
            if exc.response["Error"]["Code"] in CONFLICT_CODES:
                # The same bytes are already there: our own earlier attempt (its answer lost, the SDK retried),
                # or a replay of the same step. Only different content is a conflict.
                if self.get_bytes(key) == data:
                    return
                raise RegistryConflict(f"{self.uri(key)} already exists and is immutable") from exc
            raise

    def put_file(self, key: str, path: Path | str, *, content_type: str = "application/octet-stream",
                 create_only: bool = False, part_bytes: int = PART_BYTES, sha256: str | None = None) -> None:
        """A local file, in one PUT or, above ``part_bytes``, in parts. ``create_only`` makes the write conditional
        (If-None-Match on PutObject, or on CompleteMultipartUpload): an existing object is never overwritten; the
        same content already there (an earlier attempt of ours) is not a conflict. ``sha256``: the file's, when the
        caller has it already (the file is not read twice)."""
        path = Path(path)
        sha256 = sha256 or file_sha256(path)
        extra: dict[str, Any] = {"ContentType": content_type, "Metadata": {SHA256_METADATA: sha256}}
        condition = {"IfNoneMatch": "*"} if create_only else {}
        try:
            if path.stat().st_size <= part_bytes:
                with path.open("rb") as body:
                    self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, **extra, **condition)
            else:
                self._put_parts(key, path, part_bytes, extra, condition)
        except ClientError as exc:
            if exc.response["Error"]["Code"] in CONFLICT_CODES:
                there = self.head(key)
                if there is not None and there.get("Metadata", {}).get(SHA256_METADATA) == sha256:
                    return
                raise RegistryConflict(f"{self.uri(key)} already exists and is immutable") from exc
            raise

    def _put_parts(self, key: str, path: Path, part_bytes: int, extra: dict[str, Any],
                   condition: dict[str, str]) -> None:
        # S3 takes the condition on the completion only. An upload left incomplete (a failure, a refused completion) is
        # not aborted here, which would take s3:AbortMultipartUpload: the buckets' lifecycle rule removes its parts.
        upload = self.s3.create_multipart_upload(Bucket=self.bucket, Key=key, **extra)["UploadId"]
        parts = []
        with path.open("rb") as file:
            for number, block in enumerate(iter(lambda: file.read(part_bytes), b""), start=1):
                etag = self.s3.upload_part(Bucket=self.bucket, Key=key, UploadId=upload, PartNumber=number,
                                           Body=block)["ETag"]
                parts.append({"PartNumber": number, "ETag": etag})
        self.s3.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload,
                                          MultipartUpload={"Parts": parts}, **condition)

    def put_json(self, key: str, value: Any, *, create_only: bool = False) -> None:
        data = json.dumps(value, indent=2, sort_keys=True, default=str).encode()
        self.put_bytes(key, data, content_type="application/json", create_only=create_only)

    def get_json(self, key: str) -> Any:
        return json.loads(self.get_bytes(key))

    def json_lines(self, key: str) -> Iterator[Any]:
        """The JSON values of an object of JSON lines (Firehose's captures), streamed; blank lines skipped. A line that
        is not JSON (a delivery pipeline's own message, a cut line) is skipped and counted in ``invalid_lines``: one
        such line must not stop every reader of the captures."""
        body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"]
        for line in body.iter_lines():
            if line.strip():
                try:
                    value = json.loads(line)
                except ValueError:
                    self.invalid_lines += 1
                    continue
                yield value

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
