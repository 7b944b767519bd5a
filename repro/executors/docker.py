"""`repro replay REF --on docker`: the replay runs in a fresh container, the verdict is made on the host.

The container starts from a base image with an empty ``REPRO_HOME``, none of the host's caches, the
host network only (``network_mode="host"``: it reaches the store endpoint on 127.0.0.1) and, in its
environment, only the store's endpoint and credentials and repro's own settings. repro itself runs
there from its source and dependencies, mounted read-only (``runtime``). Inside, the ordinary replay
(``repro.executors.docker_entry``) restores the recorded interpreter from the store's snapshot (never the
image's Python), rebuilds every environment offline from the store's package files, runs the flow
and writes the replay's record (``executor``: docker + the image id) to the store. The host then
reads that record and compares it with the original, as for a local replay.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from urllib.parse import urlparse

from repro.containers import image as images
from repro.containers import runtime
from repro.errors import BadInput, InfraError, ReproError
from repro.model.record import RunRecord
from repro.settings import SETTINGS, Settings
from repro.store import Store, layout, open_store
from repro.store.snapshot import load_record, parse_ref, record_at

#: the first line of the container's standard output that carries its result (the rest is logs)
RESULT_MARK = "repro-container-result: "
HOME_INSIDE = "/tmp/repro-home"  # an empty REPRO_HOME in the container
RECORD_INSIDE = "/tmp/repro-record"  # a record file replayed (`replay path/to/record.json --on docker`), read-only
CLOSED_PROXY = "http://127.0.0.1:9"  # the discard port: nothing listens, every proxied connection fails
#: the store's credentials and endpoint (boto3's standard variables), passed into the container
_STORE_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_CA_BUNDLE",
)


#: Metaflow's S3 datastore settings, passed in when the original run had an S3 datastore (a `--with batch` run)
_S3_DATASTORE_ENV = ("METAFLOW_DATASTORE_SYSROOT_S3", "METAFLOW_S3_ENDPOINT_URL", "METAFLOW_DATATOOLS_S3ROOT")


def default_image(python_minor: str, settings: Settings, log, client) -> tuple[str, str]:
    """(image reference, its system Python major.minor): ``python:<minor>-slim`` if the daemon has it,
    else `repro image build`'s image (built or imported now if missing)."""
    import docker.errors

    slim = f"python:{python_minor}-slim"
    try:
        client.images.get(slim)
        return slim, python_minor
    except docker.errors.ImageNotFound:
        pass
    log(f"{slim} is not in the Docker daemon (no registry needed): using repro's base image")
    built = images.build(settings.home, log=log, docker_client=client)
    return built.tag, built.python


def _image_python(client, ref: str) -> str:
    """major.minor of the image's ``python3`` (repro runs on it; flows never do)."""
    import docker.errors

    try:
        img = client.images.get(ref)
    except docker.errors.ImageNotFound:
        raise BadInput(f"--image {ref}: the Docker daemon has no such image (no registry is pulled from)") from None
    if img.labels.get(images.LABEL_PYTHON):
        return img.labels[images.LABEL_PYTHON]
    out = client.containers.run(
        ref,
        ["python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        network_mode="host",
        remove=True,
    )
    return out.decode().strip().splitlines()[-1]


def container_env(store_uri: str, settings: Settings) -> dict[str, str]:
    """Only what the replay needs: the store's endpoint and credentials, repro's settings (an empty
    REPRO_HOME of the container's own), a user name for Metaflow."""
    env = {k: os.environ[k] for k in _STORE_ENV if os.environ.get(k)}
    for s in SETTINGS:
        if s.env and s.env.startswith("REPRO_") and s.env in os.environ:
            env[s.env] = os.environ[s.env]
    # Every HTTP client there (boto3, uv, requests) goes through a proxy that does not exist, except to
    # loopback and the store's endpoint: with the host's network, the store stays the only way out.
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or ""
    store_host = urlparse(endpoint).hostname or (".amazonaws.com" if store_uri.startswith("s3://") else "")
    no_proxy = ",".join(dict.fromkeys(h for h in ("127.0.0.1", "localhost", store_host) if h))
    env.update({k: CLOSED_PROXY for k in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")})
    env.update({"NO_PROXY": no_proxy, "no_proxy": no_proxy})
    env.update(
        {
            "REPRO_HOME": HOME_INSIDE,
            "REPRO_STORE": store_uri,
            "METAFLOW_USER": os.environ.get("METAFLOW_USER") or os.environ.get("USER") or "repro",
            "HOME": "/root",
            "PYTHONDONTWRITEBYTECODE": "1",  # the mounted source is read-only
            "UV_PYTHON_DOWNLOADS": "never",
        }
    )
    # where interpreters may be restored (interpreter_snapshot.interpreter_roots): the host's folders,
    # which the recorded prefixes are in
    env.update({k: os.environ[k] for k in ("PYENV_ROOT", "UV_PYTHON_INSTALL_DIR") if os.environ.get(k)})
    return env


def replay_in_docker(
    ref_text: str,
    store_uri: str | None,
    settings: Settings,
    image: str | None = None,
    log=print,
    extra_args: tuple[str, ...] = (),
):
    store = open_store(store_uri or settings.store)
    ref = parse_ref(ref_text)
    # a record file is untrusted input: decoded and validated here, and what the container reads is the
    # validated record written again (read-only), never the file itself; the store is the same either way
    original = load_record(None if ref.path is not None else store, ref)
    folder = layout.flow_dir(original.flow, original.identity)
    with tempfile.TemporaryDirectory(prefix="repro-record-") as record_dir:
        if ref.path is not None:
            (Path(record_dir) / "record.json").write_text(original.to_json())
            inside_ref = f"{RECORD_INSIDE}/record.json"
            log(f"{ref.path}: the record file is validated and mounted read-only at {inside_ref}")
        else:
            inside_ref = f"{folder}/{original.run_id}"
        return _replay_in_container(
            original, inside_ref, record_dir if ref.path is not None else "", store, settings, image, log, extra_args
        )


def _replay_in_container(
    original: RunRecord,
    inside_ref: str,
    record_dir: str,
    store: Store,
    settings: Settings,
    image: str | None,
    log,
    extra_args: tuple[str, ...],
):
    from repro.operations.replay import ReplayFailure, ReplayResult, ReplayVerdict
    from repro.operations.run import check_same_flow, compare_runs

    client = images.client()
    minors = sorted({".".join(pl.python.split(".")[:2]) for pl in original.envs.values()})
    if image:
        image_ref, python = image, _image_python(client, image)
    else:
        image_ref, python = default_image(minors[0] if minors else "3.11", settings, log, client)
    image_id = client.images.get(image_ref).id
    rt = runtime.prepare(settings.home, python, log=log)
    volumes = rt.volumes()
    parsed = urlparse(store.uri)
    if parsed.scheme == "file":  # a folder store: the container sees that folder, nothing else of the host
        volumes[parsed.path] = {"bind": parsed.path, "mode": "rw"}
    if record_dir:
        volumes[record_dir] = {"bind": RECORD_INSIDE, "mode": "ro"}
    env = {**container_env(store.uri, settings), "PYTHONPATH": rt.pythonpath, "PATH": rt.path}
    if original.datastore.get("type") == "s3":  # the replay has one too (operations/replay.py): Metaflow's settings for it
        env.update({k: os.environ[k] for k in _S3_DATASTORE_ENV if os.environ.get(k)})
    command = [
        "python3",
        "-m",
        "repro.executors.docker_entry",
        inside_ref,
        store.uri,
        image_id,
        *extra_args,
    ]
    log(f"replaying {original.ref} in a fresh container of {image_ref} ({image_id[:19]})")
    started = time.monotonic()
    container = client.containers.run(
        image_ref,
        command,
        environment=env,
        volumes=volumes,
        network_mode="host",
        working_dir="/tmp",
        detach=True,
        labels={"org.repro.replay-of": original.ref},
    )
    try:
        for chunk in container.logs(stream=True, follow=True, stdout=False, stderr=True):
            for line in chunk.decode(errors="replace").splitlines():
                log(f"[container] {line}")
        status = container.wait(timeout=3600)
        stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
    finally:
        try:
            container.remove(force=True)
        except Exception:  # already gone: nothing to clean up
            pass
    log(f"the container ended in {time.monotonic() - started:.1f} s (exit code {status.get('StatusCode')})")
    result = _result(stdout)
    if result is None:
        raise InfraError(
            f"the replay container of {original.ref} ended (exit code {status.get('StatusCode')}) without a result; "
            f"its output ends with:\n{stdout[-2000:]}"
        )
    if not result.get("recorded"):
        error = ReproError(str(result.get("error") or "the replay in the container failed"))
        error.exit_code = int(result.get("exit_code") or 3)
        raise error
    key = str(result["recorded"])
    parts = key.split("/")
    if len(parts) != 4 or key != layout.record(parts[1], parts[2]):
        raise InfraError(f"the replay container reported a record key {key!r} that is not one")
    replayed = record_at(store, key, store.get_bytes(key), original.flow, parts[2])
    if replayed.replay_of != original.ref:
        raise InfraError(f"{store.uri}/{key} is not a replay of {original.ref}")
    workdir = Path(f"/docker/{container.id[:12]}")  # removed with the container
    if result.get("verdict") == ReplayVerdict.FAILED.value:
        f = result.get("failure") or {}
        failure = ReplayFailure(**{k: str(f.get(k, "")) for k in ("error", "step", "task", "logs", "output")})
        return ReplayResult(
            original, replayed, None, workdir, ReplayVerdict.FAILED, failure, recorded=f"{store.uri}/{key}"
        )
    check_same_flow(original, replayed)
    comparison = compare_runs(original, replayed, store, settings)
    return ReplayResult(
        original,
        replayed,
        comparison,
        workdir,
        ReplayVerdict(comparison.verdict.value),
        None,
        recorded=f"{store.uri}/{key}",
    )


def _result(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            try:
                doc = json.loads(line[len(RESULT_MARK) :])
            except ValueError:
                return None
            return doc if isinstance(doc, dict) else None
    return None
