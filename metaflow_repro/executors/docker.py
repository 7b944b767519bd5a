"""`repro replay REF --on docker`: the replay runs in a fresh container, the verdict is made on the host.

The container starts from a base image with an empty ``REPRO_HOME``, none of the host's caches, the
host network only (``network_mode="host"``: it reaches the store endpoint on 127.0.0.1) and, in its
environment, only the store's endpoint and credentials and repro's own settings. repro itself runs
there from its source and dependencies, mounted read-only (``runtime``). Inside, the replay's own
prepare-and-run stage (``metaflow_repro.cli.container``, started by module name: this layer never imports an
operation) restores the recorded interpreter from the store's snapshot (never the image's Python),
rebuilds every environment offline from the store's package files, runs the flow, writes the replay's
record (``executor``: docker + the image id) to the store and its ``RunResult`` to a file in a folder
mounted from the host. The host decodes and checks that result, reads the record back from the store,
and the operation judges it, once, as for a local replay.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from urllib.parse import unquote, urlparse

from metaflow_repro.containers import image as images
from metaflow_repro.containers import runtime, stored
from metaflow_repro.errors import EXIT_INFRA, BadInput, InfraError, ReproError
from metaflow_repro.executors.base import Log, ReplayRequest, RunHere
from metaflow_repro.executors.local import LocalPlace
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.record import RunRecord
from metaflow_repro.model.replay import MAX_RESULT_BYTES, RunFailure, RunResult, parse_result
from metaflow_repro.settings import SETTINGS, Settings
from metaflow_repro.store import layout
from metaflow_repro.store.snapshot import record_at

#: the module the container runs (an edge, like the CLI: it calls the replay operation)
ENTRY = "metaflow_repro.cli.container"
OUTPUT_INSIDE = "/tmp/repro-out"  # the container writes its result there; the host copies it out (get_archive)
RESULT_FILE = "result.json"
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


class DockerPlace(LocalPlace):
    """``--on docker``: the replay runs in a fresh container, as a local replay there (its record says
    docker and the image id), and hands its ``RunResult`` back in a file of a mounted folder."""

    kind = ExecutorKind.DOCKER

    def check_args(self, extra_args: Sequence[str], image: str | None, option: str = "--on") -> None:
        super().check_args(extra_args, None, option)  # an image is what this place runs

    def check(self, store_uri: str, settings: Settings, option: str = "--on") -> None:
        """Docker needs a daemon (``DOCKER_HOST``) and a store the container reaches (``file://``,
        mounted, or S3)."""
        scheme = store_uri.split("://", 1)[0] if "://" in store_uri else "file"
        if scheme not in ("file", "s3"):
            raise BadInput(
                f"{option} docker: the store is {store_uri}; the container reaches only a file:// store (mounted) or "
                "an S3 store: set REPRO_STORE (or --store / --repro-store)"
            )
        try:
            images.client()
        except InfraError as exc:
            raise InfraError(f"{option} docker: {exc}") from None

    def executor(self) -> Executor:
        return Executor(ExecutorKind.DOCKER)  # the image id: known once the container runs

    def run(self, request: ReplayRequest, here: RunHere, log: Log) -> RunResult:
        """A record file is untrusted input: decoded and validated on the host (the request), and what
        the container reads is the validated record written again (read-only), never the file itself;
        the store is the same either way."""
        with tempfile.TemporaryDirectory(prefix="repro-container-") as tmp:
            inside_ref = request.ref
            volumes: dict[str, dict[str, str]] = {}
            if request.record_file is not None:
                (Path(tmp) / "record.json").write_text(request.original.to_json())
                inside_ref = f"{RECORD_INSIDE}/record.json"
                log(f"{request.record_file}: the record file is validated and mounted read-only at {inside_ref}")
                volumes[tmp] = {"bind": RECORD_INSIDE, "mode": "ro"}
            return _replay_in_container(request, inside_ref, volumes, log)


def _container_image(request: ReplayRequest, client, log: Log) -> tuple[str, str, Executor]:
    """(image reference, its python3's major.minor, what the replay's record says of it): the image asked
    for (``--image``, named as such), else the one the record ran in, imported from the store's bytes
    if the daemon lacks it, else the default for the record (pushed to the store, when it is repro's
    base image, so that the replay's record can name it)."""
    if request.image:
        return (
            request.image,
            _image_python(client, request.image),
            Executor(ExecutorKind.DOCKER, image_given=request.image),
        )
    home, sha = request.settings.home, request.original.executor.image_sha256
    if sha:
        got = stored.ensure(client, request.store, sha, home, log=log)
        return got.ref, got.python, Executor(ExecutorKind.DOCKER, image_sha256=sha)
    minors = sorted({".".join(pl.python.split(".")[:2]) for pl in request.original.envs.values()})
    ref, python = default_image(minors[0] if minors else "3.11", request.settings, log, client)
    manifest = stored.publish(client, ref, request.store, home, log=log)
    return ref, python, Executor(ExecutorKind.DOCKER, image_sha256=manifest.sha256 if manifest else "")


def _replay_in_container(
    request: ReplayRequest, inside_ref: str, volumes: dict[str, dict[str, str]], log: Log
) -> RunResult:
    original, store, settings = request.original, request.store, request.settings
    client = images.client()
    image_ref, python, executor = _container_image(request, client, log)
    executor = replace(executor, image=client.images.get(image_ref).id)
    rt = runtime.prepare(settings.home, python, log=log)
    volumes = {**rt.volumes(), **volumes}
    parsed = urlparse(store.uri)
    if parsed.scheme == "file":  # a folder store: the container sees that folder, nothing else of the host
        folder = unquote(parsed.path)  # the URI's path is quoted ('@' is %40): the folder's own name is mounted
        volumes[folder] = {"bind": folder, "mode": "rw"}
    env = {**container_env(store.uri, settings), "PYTHONPATH": rt.pythonpath, "PATH": rt.path}
    if original.datastore.get("type") == "s3":  # the replay has one too (local.py): Metaflow's settings for it
        env.update({k: os.environ[k] for k in _S3_DATASTORE_ENV if os.environ.get(k)})
    command = [
        "python3",
        "-m",
        ENTRY,
        f"{OUTPUT_INSIDE}/{RESULT_FILE}",
        inside_ref,
        store.uri,
        json.dumps(executor.to_dict(), sort_keys=True),
    ]
    log(f"replaying {original.ref} in a fresh container of {image_ref} ({executor.image[:19]})")
    started = time.monotonic()
    container = client.containers.run(
        image_ref,
        [*command, *request.extra_args],
        environment=env,
        volumes=volumes,
        network_mode="host",
        working_dir="/tmp",
        detach=True,
        labels={"org.repro.replay-of": original.ref},
    )
    try:
        status, stdout = _follow(container, log)
        data = _result_bytes(container)  # copied out of the stopped container: no host folder is writable there
    finally:
        try:
            container.remove(force=True)
        except Exception:  # already gone: nothing to clean up
            pass
    log(f"the container ended in {time.monotonic() - started:.1f} s (exit code {status.get('StatusCode')})")
    result = _result(data, original, status, stdout)
    return _with_record(result, request, Path(f"/docker/{container.id[:12]}"))  # the folder went with it


def _follow(container, log: Log) -> tuple[dict, str]:
    """Stream the container's standard error (its logs) until it ends: its status and standard output."""
    for chunk in container.logs(stream=True, follow=True, stdout=False, stderr=True):
        for line in chunk.decode(errors="replace").splitlines():
            log(f"[container] {line}")
    status = container.wait(timeout=3600)
    return status, container.logs(stdout=True, stderr=False).decode(errors="replace")


def _result_bytes(container) -> bytes | None:
    """The result file of a stopped container (None: it wrote none), read through the daemon's archive
    of that one path, so nothing the container made is ever opened on the host (no link is followed, no
    special file read)."""
    import docker.errors

    try:
        stream, _ = container.get_archive(f"{OUTPUT_INSIDE}/{RESULT_FILE}")
    except docker.errors.NotFound:
        return None
    limit = MAX_RESULT_BYTES + (64 << 10)  # the document and its tar headers; more is refused unread
    buffer = bytearray()
    for chunk in stream:
        buffer += chunk
        if len(buffer) > limit:
            raise InfraError(f"the replay container's {RESULT_FILE} is larger than {MAX_RESULT_BYTES} bytes")
    return result_member(bytes(buffer))


def result_member(archive: bytes) -> bytes:
    """The one regular file ``RESULT_FILE`` of a tar archive of it (what the daemon's archive of a path
    holds), at most ``MAX_RESULT_BYTES``; anything else (a link, a folder, more members) is refused."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            members = tar.getmembers()
            if len(members) != 1 or members[0].name != RESULT_FILE or not members[0].isreg():
                raise InfraError(
                    f"the replay container's {RESULT_FILE} is not one regular file: "
                    f"{', '.join(f'{m.name} ({m.type!r})' for m in members[:5]) or 'empty'}"
                )
            if members[0].size > MAX_RESULT_BYTES:
                raise InfraError(f"the replay container's {RESULT_FILE} is larger than {MAX_RESULT_BYTES} bytes")
            body = tar.extractfile(members[0])
            assert body is not None, "a regular member has a body"
            return body.read()
    except tarfile.TarError as exc:
        raise InfraError(f"the replay container's {RESULT_FILE} could not be read: {exc}") from None


def _result(data: bytes | None, original: RunRecord, status: dict, stdout: str) -> RunResult:
    """The container's result, decoded and checked as the untrusted document it is."""
    ended = f"the replay container of {original.ref} ended (exit code {status.get('StatusCode')})"
    if data is None:
        raise InfraError(f"{ended} without a result; its output ends with:\n{stdout[-2000:]}")
    try:
        return parse_result(data, f"{ended}: its result")
    except BadInput as exc:
        raise InfraError(str(exc)) from None


def _with_record(result: RunResult, request: ReplayRequest, workdir: Path) -> RunResult:
    """The result with the replay's record, read back from the store where the container wrote it
    (decoded by the record's own strict decoder), and the container's working folder. A replay that
    could not run raises its error again, here."""
    if result.error:
        error = ReproError(result.error)
        error.exit_code = result.error_code or EXIT_INFRA
        raise error
    store, original = request.store, request.original
    result = replace(result, workdir=str(workdir), saved="")  # its REPRO_HOME went with the container
    if not result.recorded:
        if result.failure is None:  # it ran, but its record could not be written to the store
            return replace(
                result,
                failure=RunFailure(
                    error=f"the replay ran in the container, but its record could not be written to {store.uri} "
                    "(its [container] log above says why)"
                ),
            )
        return result
    key = result.recorded
    parts = key.split("/")
    if len(parts) != 4 or key != layout.record(parts[1], parts[2]):
        raise InfraError(f"the replay container reported a record key {key!r} that is not one")
    replayed = record_at(store, key, store.get_bytes(key), original.flow, parts[2])
    if replayed.replay_of != original.ref:
        raise InfraError(f"{store.uri}/{key} is not a replay of {original.ref}")
    return result.with_record(replayed)
