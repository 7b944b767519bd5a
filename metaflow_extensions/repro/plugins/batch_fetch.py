"""Inside a Batch container: fetch ``batch_bootstrap.py`` from the store, verify it, run it.

This is all a job's command carries (``CondaEnvironment.bootstrap_commands``, zlib'd, base64): AWS
Batch refuses container overrides over 8192 characters, so the bootstrap script itself (tens of KB) is
a content-addressed store object the host stages (``repro.containers.batch``). Run on its standard
input (``python3 -c 'exec(...)'``, so argv[0] is "-c")::

    ... | python3 -c ... s3://bucket/prefix <key of the script> <its sha256> <sha256 of the manifest>

Standard library and boto3 only, Python 3.7 syntax, imports nothing of repro's (it runs from /tmp).
"""

import hashlib
import os
import sys
import time

EXIT_INTEGRITY = 3
DEST = "/tmp/repro_batch_bootstrap.py"


def main(argv):
    store, key, sha256 = argv[1], argv[2], argv[3]
    bucket, _, prefix = store[len("s3://") :].partition("/")
    full = prefix.strip("/") + "/" + key if prefix.strip("/") else key
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
    with open(DEST + ".tmp", "wb") as fh:
        fh.write(data)
    os.rename(DEST + ".tmp", DEST)
    os.execv(sys.executable, [sys.executable, DEST, store] + argv[4:])


if __name__ == "__main__":
    sys.exit(main(sys.argv))
