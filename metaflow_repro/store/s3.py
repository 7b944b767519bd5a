"""A store in S3 (``s3://bucket/prefix``) through boto3.

Credentials come from boto3's standard chain; ``AWS_ENDPOINT_URL_S3`` points it at an
S3-compatible server. Connection failures are infrastructure errors (exit code 3).

Timeouts and retries are sized for a command line (``Limits``): an endpoint that accepts connections
and never answers costs ``attempts`` × the read timeout plus a short backoff, and each attempt that
failed says on stderr that it is retried.
"""

from __future__ import annotations

import base64
import builtins
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn
from urllib.parse import urlparse

from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.settings import BY_NAME, env_setting
from metaflow_repro.store.base import ObjectInfo, Store, StoreObjectMissing

SINGLE_PUT_LIMIT = 5 * 1024**3  # S3's limit for one PUT
BACKOFF_SECONDS = 0.5  # before the second attempt; doubled before each next one
BACKOFF_MAX_SECONDS = 8.0

#: the variables that set ``Limits`` (settings ``s3_connect_timeout``, ``s3_read_timeout``, ``s3_attempts``)
CONNECT_TIMEOUT_VAR = BY_NAME["s3_connect_timeout"].env
READ_TIMEOUT_VAR = BY_NAME["s3_read_timeout"].env
ATTEMPTS_VAR = BY_NAME["s3_attempts"].env


@dataclass(frozen=True)
class Limits:
    """How long one request to S3 may take, and how often it is tried: seconds to connect, seconds of
    silence while reading an answer, and attempts in all (retries back off 0.5 s, 1 s, 2 s, ...)."""

    connect_timeout: float
    read_timeout: float
    attempts: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str] | None = None) -> Limits:
        env = dict(os.environ if environ is None else environ)
        return cls(
            connect_timeout=env_setting("s3_connect_timeout", env),
            read_timeout=env_setting("s3_read_timeout", env),
            attempts=env_setting("s3_attempts", env),
        )


def _warn(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Retries:
    """The ``needs-retry`` handler of a client whose own retries are off: botocore's test of what is
    worth retrying (its standard mode: timeouts, dropped connections, throttling, 5xx), with these
    ``Limits``' attempts, repro's backoff, and one line per retry on stderr."""

    def __init__(self, uri: str, limits: Limits, warn: Callable[[str], None] = _warn):
        from botocore.retries.standard import RetryEventAdapter, StandardRetryConditions

        self.uri, self.limits, self.warn = uri, limits, warn
        self._adapter = RetryEventAdapter()
        self._conditions = StandardRetryConditions(max_attempts=limits.attempts)

    def __call__(self, **kwargs) -> float | None:
        context = self._adapter.create_retry_context(**kwargs)
        if not self._conditions.is_retryable(context):
            return None  # an answer, an error no retry mends, or the last attempt
        attempt = context.attempt_number
        delay = min(BACKOFF_MAX_SECONDS, BACKOFF_SECONDS * 2 ** (attempt - 1))
        exc = context.caught_exception
        why = f"{type(exc).__name__}: {exc}" if exc is not None else f"HTTP {context.http_response.status_code}"
        operation = getattr(context.operation_model, "name", "request")
        self.warn(
            f"repro: store {self.uri}: {operation} failed on attempt {attempt} of {self.limits.attempts} "
            f"({why}; timeouts {self.limits.connect_timeout:g} s to connect, {self.limits.read_timeout:g} s "
            f"to read); retrying in {delay:g} s"
        )
        return delay


class S3Store(Store):
    def __init__(self, uri: str, limits: Limits | None = None):
        import boto3
        from boto3.s3.transfer import TransferConfig
        from botocore.config import Config

        parsed = urlparse(uri)
        if not parsed.netloc:
            raise BadInput(f"store {uri!r}: an S3 store needs a bucket: s3://bucket/prefix")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self.uri = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.limits = limits or Limits.from_environ()
        config = Config(
            retries={"total_max_attempts": 1, "mode": "standard"},  # botocore's own: off (``Retries`` decides)
            connect_timeout=self.limits.connect_timeout,
            read_timeout=self.limits.read_timeout,
            max_pool_connections=32,
        )
        self.client = boto3.session.Session().client("s3", config=config, endpoint_url=env_setting("s3_endpoint"))
        self.client.meta.events.register("needs-retry.s3", Retries(self.uri, self.limits), unique_id="repro-retries")
        # boto3's defaults (ranged, parallel transfers above 8 MB); a body that stalls is read again as often
        self.transfer = TransferConfig(num_download_attempts=self.limits.attempts)

    def _key(self, key: str) -> str:
        return f"{self.prefix}/{key}" if self.prefix else key

    def _fail(self, what: str, exc: Exception) -> NoReturn:
        from botocore.exceptions import ClientError

        if isinstance(exc, ClientError):
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("404", "NoSuchKey", "NotFound"):
                raise StoreObjectMissing(f"store {self.uri}: missing object {what}") from None
            if code in ("NoSuchBucket",):
                raise InfraError(f"store {self.uri}: bucket {self.bucket} does not exist") from None
        raise InfraError(f"store {self.uri}: {what}: {type(exc).__name__}: {exc}{self._tried(exc)}") from None

    def _tried(self, exc: Exception) -> str:
        """What was tried, for an endpoint that did not answer in time."""
        from botocore.exceptions import ConnectionError, HTTPClientError

        if not isinstance(exc, (ConnectionError, HTTPClientError)):
            return ""
        return (
            f" (tried {self.limits.attempts} time(s), {self.limits.connect_timeout:g} s to connect and "
            f"{self.limits.read_timeout:g} s to read each: {CONNECT_TIMEOUT_VAR}, {READ_TIMEOUT_VAR}, {ATTEMPTS_VAR})"
        )

    def stat(self, key: str) -> ObjectInfo | None:
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            try:
                self._fail(key, exc)  # always raises
            except StoreObjectMissing:
                return None
        return ObjectInfo(key, head["ContentLength"], head["LastModified"].timestamp())

    def touch(self, key: str) -> None:
        try:  # copying an object onto itself (new metadata) gives it a new LastModified
            self.client.copy_object(
                Bucket=self.bucket,
                Key=self._key(key),
                MetadataDirective="REPLACE",
                CopySource={"Bucket": self.bucket, "Key": self._key(key)},
                Metadata={"repro-touched": str(int(time.time()))},
            )
        except Exception as exc:
            self._fail(f"touch {key}", exc)

    def put_file(self, key: str, path: Path, sha256: str | None = None) -> None:
        """With ``sha256`` (and below S3's 5 GB single-upload limit) one PUT that carries it: S3 refuses
        bytes that do not match, and keeps it as the object's whole-object checksum for later checks.
        Otherwise a (multipart) transfer, whose checksum is a composite that ``sha256`` cannot use."""
        try:
            if sha256 and path.stat().st_size < SINGLE_PUT_LIMIT:
                with open(path, "rb") as body:
                    self.client.put_object(
                        Bucket=self.bucket,
                        Key=self._key(key),
                        Body=body,
                        ChecksumAlgorithm="SHA256",
                        ChecksumSHA256=base64.b64encode(bytes.fromhex(sha256)).decode(),
                    )
            else:
                self.client.upload_file(
                    str(path),
                    self.bucket,
                    self._key(key),
                    Config=self.transfer,
                    ExtraArgs={"ChecksumAlgorithm": "SHA256"},
                )
        except Exception as exc:
            self._fail(f"upload {key}", exc)

    def put_bytes(self, key: str, data: bytes) -> None:
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, ChecksumAlgorithm="SHA256")
        except Exception as exc:
            self._fail(f"upload {key}", exc)

    def get_file(self, key: str, dest: Path) -> None:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=dest.parent)
        os.close(fd)
        try:
            self.client.download_file(self.bucket, self._key(key), tmp, Config=self.transfer)
            os.replace(tmp, dest)
        except Exception as exc:
            self._fail(key, exc)
        finally:
            Path(tmp).unlink(missing_ok=True)

    def chunks(self, key: str, size: int = 1 << 20) -> Iterator[bytes]:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
            yield from body.iter_chunks(size)
        except Exception as exc:
            self._fail(key, exc)

    def get_bytes(self, key: str) -> bytes:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except Exception as exc:
            self._fail(key, exc)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        strip = len(self.prefix) + 1 if self.prefix else 0
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self._key(prefix))
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"][strip:], obj["Size"], obj["LastModified"].timestamp())
        except Exception as exc:
            self._fail(f"list {prefix}", exc)

    def sha256(self, key: str) -> str | None:
        """S3's own ``ChecksumSHA256`` (checked by the server on upload) when the object has a
        whole-object one; else (a multipart upload's composite checksum, none at all) download and hash."""
        try:
            head = self.client.head_object(Bucket=self.bucket, Key=self._key(key), ChecksumMode="ENABLED")
        except Exception as exc:
            try:
                self._fail(key, exc)
            except StoreObjectMissing:
                return None
        checksum = head.get("ChecksumSHA256") or ""
        multipart = "-" in head.get("ETag", "") or "-" in checksum or head.get("ChecksumType") == "COMPOSITE"
        if checksum and not multipart:
            try:
                return base64.b64decode(checksum).hex()
            except ValueError:
                pass
        return super().sha256(key)

    def abort_stale_uploads(self, older_than: float) -> builtins.list[str]:
        """Abort multipart uploads started more than ``older_than`` seconds ago (a killed push's parts
        cost storage forever otherwise)."""
        aborted: builtins.list[str] = []
        now = time.time()
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(
                Bucket=self.bucket, Prefix=self._key("")
            )
            for page in pages:
                for up in page.get("Uploads", []):
                    if now - up["Initiated"].timestamp() >= older_than:
                        self.client.abort_multipart_upload(Bucket=self.bucket, Key=up["Key"], UploadId=up["UploadId"])
                        aborted.append(up["Key"])
        except Exception as exc:
            self._fail("abort stale multipart uploads", exc)
        return aborted

    def require_existing(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except Exception as exc:
            from botocore.exceptions import ClientError

            if isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in ("404", "NoSuchBucket"):
                raise BadInput(
                    f"store {self.uri}: bucket {self.bucket!r} does not exist; check the store URI "
                    "(--store, REPRO_STORE or `store` under [tool.repro])"
                ) from None
            self._fail("open the bucket", exc)

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except Exception as exc:
            self._fail(f"delete {key}", exc)
