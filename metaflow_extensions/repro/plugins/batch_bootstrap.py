"""Inside a Batch container, before the task: make the step's environment from the S3 store alone.

Run as a script by the image's own ``python3`` (standard library + boto3, which the image has),
passed inline by ``CondaEnvironment.bootstrap_commands``::

    python3 batch_bootstrap.py s3://bucket/prefix <sha256 of the bootstrap manifest>

The manifest (``bootstrap/<sha256>.json``, written by the host before it submits the job) names
every object the environment needs, each by key and sha256: the interpreter snapshot (a tarball of
its install prefix), uv, and the env's package files. Every object is verified before use; a
mismatch stops the job naming the object. The interpreter is restored at its recorded prefix, the
env is built offline (``uv pip install --offline --no-index --require-hashes``) at the path it has
on the host, and the host's marker (env id + the fingerprint taken after the host's build) is
written last, so the task-side check (task_check.py) proves this env equals the host's, which
equals the lock. Standard library and boto3 only, Python 3.7 syntax.
"""

import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

EXIT_INTEGRITY = 3
WORK = "/tmp/repro-bootstrap"


class Failed(Exception):
    pass


def _client():
    import boto3

    endpoint = os.environ.get("METAFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None
    return boto3.client("s3", endpoint_url=endpoint)


def _split(uri):
    if not uri.startswith("s3://"):
        raise Failed("the store %r is not an s3:// store" % uri)
    bucket, _, prefix = uri[len("s3://") :].partition("/")
    return bucket, prefix.strip("/")


def _fetch(s3, bucket, prefix, key, sha256, dest):
    """Download ``key`` to ``dest`` and verify its sha256 (a mismatch names the object)."""
    full = prefix + "/" + key if prefix else key
    tmp = dest + ".part"
    try:
        s3.download_file(bucket, full, tmp)
    except Exception as exc:  # botocore's ClientError, connection errors
        raise Failed("cannot fetch store object %s from s3://%s: %s" % (key, bucket, exc)) from None
    h = hashlib.sha256()
    with open(tmp, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    if h.hexdigest() != sha256:
        os.unlink(tmp)
        raise Failed(
            "store object %s (s3://%s/%s) does not match its sha256: expected %s, got %s; "
            "it was not used. Push the run again from a machine with intact files."
            % (key, bucket, full, sha256, h.hexdigest())
        )
    os.rename(tmp, dest)
    return dest


def _restore_interpreter(s3, bucket, prefix, snap):
    """Unpack the interpreter snapshot at its prefix, unless an interpreter is already there."""
    exe = os.path.join(snap["prefix"], snap["executable"])
    if os.path.exists(exe):
        return exe
    tarball = _fetch(s3, bucket, prefix, snap["key"], snap["sha256"], os.path.join(WORK, "python.tar.gz"))
    parent = os.path.dirname(snap["prefix"])
    if not os.path.isdir(parent):
        os.makedirs(parent)
    staging = tempfile.mkdtemp(prefix=".repro-python-", dir=parent)
    os.chmod(staging, 0o755)
    # tar (C) rather than tarfile: a stdlib is thousands of files. The tarball is the one the host packed
    # (its sha256 verified above); GNU tar strips leading slashes and skips members with ".." (its defaults).
    _run(["tar", "--no-same-owner", "-xzf", tarball, "-C", staging], dict(os.environ))
    os.rename(staging, snap["prefix"])
    return exe


def main(argv):
    store, manifest_sha = argv[1], argv[2]
    started = time.time()
    bucket, prefix = _split(store)
    if not os.path.isdir(WORK):
        os.makedirs(WORK)
    s3 = _client()
    path = _fetch(
        s3, bucket, prefix, "bootstrap/%s.json" % manifest_sha, manifest_sha, os.path.join(WORK, "manifest.json")
    )
    with open(path) as fh:
        manifest = json.load(fh)
    env_path = manifest["env_path"]
    marker_path = os.path.join(env_path, manifest["marker_name"])
    if os.path.exists(marker_path):
        return 0
    uv = os.path.join(WORK, "uv")
    jobs = [(manifest["uv"]["key"], manifest["uv"]["sha256"], uv)]
    for p in manifest["packages"]:
        # at the host's cache path: uv records the file's URL in the env (direct_url.json), so the
        # same path gives the same RECORD files, and so the fingerprint the host took
        if not os.path.isdir(os.path.dirname(p["path"])):
            os.makedirs(os.path.dirname(p["path"]))
        jobs.append((p["key"], p["sha256"], p["path"]))
    with ThreadPoolExecutor(max_workers=16) as pool:
        interp = pool.submit(_restore_interpreter, s3, bucket, prefix, manifest["interpreter"])
        for f in [pool.submit(_fetch, s3, bucket, prefix, k, sha, dest) for k, sha, dest in jobs]:
            f.result()
        python = interp.result()
    fetched = time.time()
    os.chmod(uv, 0o755)
    env = dict(os.environ, UV_CACHE_DIR=os.path.join(WORK, "uv-cache"), UV_PYTHON_DOWNLOADS="never")
    env.pop("VIRTUAL_ENV", None)
    _run([uv, "venv", "--quiet", "--no-project", "--offline", "--python", python, env_path], env)
    req = os.path.join(WORK, "requirements.txt")
    with open(req, "w") as fh:
        for p in manifest["packages"]:
            fh.write("%s @ %s --hash=sha256:%s\n" % (p["name"], p["url"], p["sha256"]))
    venv = time.time()
    _run(
        [uv, "pip", "install", "--quiet", "--offline", "--no-index", "--require-hashes", "--no-deps"]
        + ["--link-mode", "copy", "--python", os.path.join(env_path, "bin", "python"), "-r", req],
        env,
    )
    tmp = marker_path + ".tmp"
    with open(tmp, "w") as fh:
        json.dump(manifest["marker"], fh, sort_keys=True)
    os.rename(tmp, marker_path)  # written last: the env exists only from here on
    sys.stderr.write(
        "repro: env %s built from %s in %.2f s (fetch and restore %.2f s, venv %.2f s, install %.2f s)\n"
        % (
            manifest["marker"].get("env_id", "?")[:12],
            store,
            time.time() - started,
            fetched - started,
            venv - fetched,
            time.time() - venv,
        )
    )
    return 0


def _run(cmd, env):
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, universal_newlines=True)
    if proc.returncode != 0:
        raise Failed(
            "%s failed (exit %d): %s" % (os.path.basename(cmd[0]) + " " + cmd[1], proc.returncode, proc.stderr)
        )


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv))
    except Failed as exc:
        sys.stderr.write("repro bootstrap: %s\n" % exc)
        sys.exit(EXIT_INTEGRITY)
