"""Inside a Batch job: fetch batch_bootstrap.py, verify its sha256, run it. All a job's command carries
(zlib'd: AWS Batch refuses commands over 8192 characters)::

    python3 -c ... s3://bucket/prefix <script key> <its sha256> <manifest sha256> [instance cache]

A script in the instance cache (``batch-cache``) with that sha256 is run without the store (or boto3);
one fetched is kept there. Standard library and boto3 only, Python 3.7 syntax.
"""

import hashlib
import os
import sys
import tempfile
import time

EXIT_INTEGRITY = 3
DEST = "/tmp/repro_batch_bootstrap.py"


def _cached(cache, sha256):
    if not cache:
        return None
    try:
        with open(os.path.join(cache, "scripts", sha256 + ".py"), "rb") as fh:
            data = fh.read()
    except (OSError, IOError):
        return None
    return data if hashlib.sha256(data).hexdigest() == sha256 else None


def _keep(cache, sha256, data):
    # best effort: a cache that cannot be written only means the next job fetches again
    if not cache:
        return
    folder = os.path.join(cache, "scripts")
    try:
        if not os.path.isdir(folder):
            os.makedirs(folder)
        fd, tmp = tempfile.mkstemp(prefix="." + sha256 + ".", dir=folder)  # unique across containers
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.rename(tmp, os.path.join(folder, sha256 + ".py"))
    except (OSError, IOError):
        pass


def main(argv):
    store, key, sha256 = argv[1], argv[2], argv[3]
    cache = argv[5] if len(argv) > 5 else ""
    bucket, _, prefix = store[len("s3://") :].partition("/")
    full = prefix.strip("/") + "/" + key if prefix.strip("/") else key
    data = _cached(cache, sha256)
    if data is None:
        import boto3

        endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
        for attempt in (1, 2, 3):
            try:
                data = boto3.client("s3", endpoint_url=endpoint).get_object(Bucket=bucket, Key=full)["Body"].read()
                break
            except Exception as exc:  # botocore's errors: nothing else runs in this block
                if attempt == 3:
                    sys.stderr.write(
                        "repro bootstrap: cannot fetch store object %s from s3://%s: %s\n" % (key, bucket, exc)
                    )
                    return EXIT_INTEGRITY
                time.sleep(attempt)
        got = hashlib.sha256(data).hexdigest()
        if got != sha256:
            sys.stderr.write(
                "repro bootstrap: store object %s (s3://%s/%s) does not match its sha256: expected %s, got %s; "
                "it was not run\n" % (key, bucket, full, sha256, got)
            )
            return EXIT_INTEGRITY
        _keep(cache, sha256, data)
    with open(DEST + ".tmp", "wb") as fh:
        fh.write(data)
    os.rename(DEST + ".tmp", DEST)
    os.execv(sys.executable, [sys.executable, DEST, store] + argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
