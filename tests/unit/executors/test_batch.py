"""Pure parts of `--with batch`: what a fingerprint leaves out, which options mean Batch, what an
interpreter snapshot leaves out.

Batch staging (metaflow_repro.executors.batch._put_missing) on a real folder store: an object this host
verified (or uploaded) costs one stat while it stays as verified; one rewritten since is hashed again,
and a same-size corrupt one is replaced with the verified local copy (as `repro push` does)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from metaflow_extensions.repro.plugins import probe
from metaflow_repro.executors.batch import StagingLedger, _put_missing, runs_on_batch
from metaflow_repro.settings import Home
from metaflow_repro.store import LocalStore


def test_which_run_options_send_every_step_to_batch():
    assert runs_on_batch(["--with", "batch"])
    assert runs_on_batch(["--tag", "x", "--with", "batch:cpu=2"])
    assert runs_on_batch(["--with=batch"])
    assert not runs_on_batch(["--with", "retry"])
    assert not runs_on_batch(["--tag", "batch"])
    assert not runs_on_batch([])


def test_batch_options_names_each_batch_option_and_never_a_decorator_spec_as_an_option():
    from metaflow_repro.executors.batch import batch_options

    args = ["--with", "batch:cpu=2", "--tag", "batch", "--with=batch", "--with", "retry", "--with=batchy"]
    assert batch_options(args) == [(0, 2), (4, 5)]
    assert batch_options(["--with", "--with", "batch"]) == []  # "--with" is the first option's value
    assert batch_options(["--with"]) == []


def test_the_host_lists_an_envs_files_as_a_jobs_build_of_it_will_hold_them(tmp_path):
    from metaflow_extensions.repro.plugins import protocol
    from metaflow_extensions.repro.plugins.batch_bootstrap import ANY, DIR, FILE, LINK, RECORD, check_tree
    from metaflow_repro.executors.batch import env_files
    from metaflow_repro.settings import Home

    env = tmp_path / "env"
    info = env / "lib" / "python3.11" / "site-packages" / "six-1.16.0.dist-info"
    info.mkdir(parents=True)
    (info.parent / "six.py").write_text("x = 1\n")
    (info.parent / "__pycache__").mkdir()
    (info.parent / "__pycache__" / "six.cpython-311.pyc").write_bytes(b"host bytecode")
    (info / "RECORD").write_text("six.py,sha256=abc,6\n")
    (info / "uv_cache.json").write_text('{"ctime": 1}')
    (env / "bin").mkdir()
    (env / "bin" / "python").symlink_to("/usr/bin/python3.11")
    (env / protocol.ENV_MARKER).write_text("{}")
    files = env_files(env, Home(tmp_path / "home"))
    site = "lib/python3.11/site-packages/"
    folders = ["bin", "lib", "lib/python3.11", "lib/python3.11/site-packages", site + "six-1.16.0.dist-info"]
    assert files == {
        **{f: [DIR, ""] for f in folders},  # the bytecode folder is not listed: a job's env has none
        site + "six.py": [FILE, hashlib.sha256(b"x = 1\n").hexdigest()],
        site + "six-1.16.0.dist-info/RECORD": [RECORD, probe.record_digest(b"six.py,sha256=abc,6\n")],
        site + "six-1.16.0.dist-info/uv_cache.json": [ANY, ""],
        "bin/python": [LINK, "/usr/bin/python3.11"],
    }
    # a job's build (no bytecode; its own marker and uv cache file) checks against it
    job = tmp_path / "job-env"
    shutil.copytree(env, job, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    (job / site / "six-1.16.0.dist-info" / "uv_cache.json").write_text('{"ctime": 2}')
    expected = {**files, protocol.ENV_MARKER: [ANY, ""]}
    assert check_tree(str(job), expected) == ""
    (job / site / "__pycache__").mkdir()
    (job / site / "__pycache__" / "six.cpython-311.pyc").write_bytes(b"planted")
    assert check_tree(str(job), expected) == site + "__pycache__ was added"


def test_an_env_a_job_could_not_build_the_same_is_not_cached_and_the_log_says_why(tmp_path):
    """The host lists no files (so jobs keep no copy of the env, each builds its own) when its env was built
    with another uv than the jobs', or links outside itself and the interpreter (uv's symlink link mode)."""
    from metaflow_extensions.repro.plugins import protocol
    from metaflow_repro.env.uvtool import uv_bin
    from metaflow_repro.executors.batch import _env_files_if_same_uv, _uv_version
    from metaflow_repro.settings import Home

    uv = Path(uv_bin())
    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / protocol.ENV_MARKER).write_text("{}")
    (env / "bin" / "python").symlink_to("/opt/py/bin/python3")
    logged: list[str] = []

    def files(cfg_uv: str):
        (env / "pyvenv.cfg").write_text(f"home = /opt/py/bin\nuv = {cfg_uv}\n")
        return _env_files_if_same_uv(env, Home(tmp_path / "home"), uv, "/opt/py", "F", logged.append)

    assert files(_uv_version(uv)) is not None and not logged
    assert files("0.0.1") is None and "built with uv 0.0.1" in logged[-1]
    (env / "bin" / "six.py").symlink_to("/root/.cache/uv/archive-v0/x/six.py")
    (env / protocol.ENV_MARKER).write_text("{} ")  # the env was rebuilt (its file list is listed again)
    assert files(_uv_version(uv)) is None and "bin/six.py leads outside it" in logged[-1]


def test_a_file_list_kept_by_an_older_repro_is_made_again(tmp_path):
    """The lists are kept under their format: one kept before folders were listed would make every job's
    check fail ("bin was added"), so it is never used (found by benchmarks/bench_batch.py on a warm home)."""
    import json

    from metaflow_extensions.repro.plugins import protocol
    from metaflow_repro.executors.batch import env_files
    from metaflow_repro.settings import Home

    env = tmp_path / "env"
    (env / "bin").mkdir(parents=True)
    (env / "bin" / "tool").write_text("x")
    (env / protocol.ENV_MARKER).write_text("{}")
    home = Home(tmp_path / "home")
    first = env_files(env, home)
    (kept,) = home.staged.glob("files-*.json")
    doc = json.loads(kept.read_text())
    marker = (env / protocol.ENV_MARKER).stat()
    old = {"key": [str(env), marker.st_mtime_ns, marker.st_size], "files": {"bin/tool": first["bin/tool"]}}
    kept.write_text(json.dumps(old))  # as the first version of the instance cache kept it
    assert env_files(env, home) == first and "bin" in first
    assert json.loads(kept.read_text())["key"] == doc["key"]


class CountingStore(LocalStore):
    """A folder store that counts how often an object's bytes are hashed (read whole)."""

    hashed = 0

    def sha256(self, key):
        self.hashed += 1
        return super().sha256(key)


def test_a_verified_object_is_hashed_once_and_a_same_size_corrupt_one_is_replaced(tmp_path):
    data = b"a package file\n" * 100
    sha = hashlib.sha256(data).hexdigest()
    local = tmp_path / "six-1.16.0-py2.py3-none-any.whl"
    local.write_bytes(data)
    store = CountingStore(str(tmp_path / "store"))
    key = f"packages/sha256/{sha[:2]}/{sha}/{local.name}"
    logs: list[str] = []
    ledger = StagingLedger(Home(tmp_path / "home"), logs.append)

    _put_missing(store, key, local, sha, ledger)  # uploaded: known from now on
    _put_missing(store, key, local, sha, ledger)
    assert store.hashed == 0 and (tmp_path / "store" / key).read_bytes() == data

    # another host (or a new REPRO_HOME) stages the same object: hashed once, then known
    other = StagingLedger(Home(tmp_path / "other-home"))
    _put_missing(store, key, local, sha, other)
    _put_missing(store, key, local, sha, other)
    assert store.hashed == 1 and not other.replaced

    # same size, other bytes, written later: no longer what the ledger verified -> hashed and replaced
    path = tmp_path / "store" / key
    path.write_bytes(data[:-1] + b"X")
    st = path.stat()
    os.utime(path, (st.st_atime, st.st_mtime + 5))
    _put_missing(store, key, local, sha, ledger)
    assert path.read_bytes() == data
    assert ledger.replaced == [key] and any(f"{key} is corrupt" in m and "replaced" in m for m in logs)
    _put_missing(store, key, local, sha, ledger)
    assert store.hashed == 2  # the replacement is known again


# -- the image the jobs run in ---------------------------------------------------------------------

DIGEST = "sha256:" + "e" * 64


def test_the_image_of_a_runs_jobs_is_metaflows_choice_for_its_options():
    """As Metaflow's @batch init: the `--with batch:image=` of the first `--with batch`, else the
    configured image, else python:<runtime minor>; the configured registry goes before a bare name."""
    from metaflow_repro.executors.batch import job_image, with_batch_image

    assert with_batch_image(["--with", "batch:cpu=2,image=team/job:3", "--with", "batch:image=other:1"]) == "team/job:3"
    assert with_batch_image(["--with=batch:image=a/b:1"]) == "a/b:1"
    assert with_batch_image(["--with", "batch:cpu=2", "--tag", "image=x"]) == ""
    assert with_batch_image(["--with", "retry:image=x"]) == ""
    assert job_image(["--with", "batch:image=team/job:3"], "conf:1", "", "3.11") == "team/job:3"
    assert job_image(["--with", "batch"], "conf:1", "", "3.11") == "conf:1"
    assert job_image(["--with", "batch"], "", "", "3.12") == "python:3.12"
    assert job_image(["--with", "batch"], "team/job:3", "reg.example.com:5000/", "3.11") == (
        "reg.example.com:5000/team/job:3"
    )
    assert job_image(["--with", "batch"], "reg.io/team/job:3", "other.io", "3.11") == "reg.io/team/job:3"


def test_a_registry_digest_is_taken_from_the_name_or_the_daemons_repo_digests_of_its_repository():
    from metaflow_repro.executors.batch import digest_of, pinned, repository
    from metaflow_repro.model.interpreter import Executor, ExecutorKind

    assert repository("reg.io:5000/team/job:3") == "reg.io:5000/team/job"
    assert repository(f"team/job@{DIGEST}") == "team/job" and repository("job") == "job"
    assert digest_of(f"reg.io/team/job@{DIGEST}") == DIGEST
    other = "sha256:" + "f" * 64
    assert digest_of("reg.io/team/job:3", [f"elsewhere/job@{other}", f"reg.io/team/job@{DIGEST}"]) == DIGEST
    assert digest_of("reg.io/team/job:3", [f"reg.io/team/jobs@{DIGEST}", "reg.io/team/job@md5:12"]) == ""
    assert digest_of("team/job:3") == ""
    ran = Executor(ExecutorKind.BATCH, "reg.io:5000/team/job:3", image_digest=DIGEST)
    assert pinned(ran) == f"reg.io:5000/team/job@{DIGEST}"  # the bytes it ran, whatever the tag names now
    assert pinned(Executor(ExecutorKind.BATCH, "team/job:3")) == "team/job:3"


def test_a_replay_on_batch_runs_the_recorded_image_and_says_when_it_cannot_prove_it_is_the_same():
    from dataclasses import replace

    from metaflow_repro.executors.batch import BatchPlace, image_problem
    from metaflow_repro.model.interpreter import Executor, ExecutorKind
    from tests.helpers import make_record

    sha, other = "a" * 64, "b" * 64
    run = replace(make_record(), executor=Executor(ExecutorKind.BATCH, "repro-batch-job:1", image_sha256=sha))
    same = Executor(ExecutorKind.BATCH, "repro-batch-job:1", image_sha256=sha)
    assert image_problem(run, same) == ""
    moved = image_problem(run, replace(same, image_sha256=other))
    assert "another root file system" in moved and sha[:12] in moved and other[:12] in moved and "--on docker" in moved
    unseen = image_problem(run, replace(same, image_sha256=""))
    assert unseen.startswith("cannot check") and sha[:12] in unseen
    foreign = replace(run, executor=Executor(ExecutorKind.BATCH, "team/job:3", image_digest=DIGEST))
    assert image_problem(foreign, foreign.executor) == ""
    named = replace(run, executor=Executor(ExecutorKind.BATCH, "team/job:3"))
    assert "recorded no digest" in image_problem(named, named.executor)
    assert image_problem(make_record(), same) == ""  # a local run: nothing recorded to prove
    env = BatchPlace().environment(foreign, "s3://b/p", {"METAFLOW_BATCH_CONTAINER_IMAGE": "now:1"}, print)
    assert env["METAFLOW_BATCH_CONTAINER_IMAGE"] == f"team/job@{DIGEST}"
    assert (
        BatchPlace().environment(make_record(), "s3://b/p", {"METAFLOW_BATCH_CONTAINER_IMAGE": "now:1"}, print)[
            "METAFLOW_BATCH_CONTAINER_IMAGE"
        ]
        == "now:1"
    )


# -- the image a Batch run's jobs ran in, with a fake Docker daemon (no real one: what AWS users have) -----------

LAYER, OTHER_LAYER = "1" * 64, "2" * 64


class _FakeImage:
    def __init__(self, layers, labels=None, repo_digests=()):
        self.attrs = {"RootFS": {"Layers": [f"sha256:{x}" for x in layers]}, "RepoDigests": list(repo_digests)}
        self.labels = labels or {}


class _FakeDaemon:
    """What image_identity asks of docker.DockerClient: ``images.get(name)`` (docker.errors.ImageNotFound
    for a name it lacks, or any API error ``fail`` names)."""

    def __init__(self, held=None, fail=None):
        self.held, self.fail, self.timeouts = held or {}, fail, []
        self.images = self

    def get(self, name):
        import docker.errors

        if self.fail is not None:
            raise self.fail
        if name not in self.held:
            raise docker.errors.ImageNotFound(f"No such image: {name}")
        return self.held[name]


def _daemon(monkeypatch, daemon):
    """``images.client`` answers with ``daemon`` (None: no daemon answers, as on a host without Docker)."""
    from metaflow_repro.containers import image as images
    from metaflow_repro.errors import InfraError

    def client(timeout=600):
        if daemon is None:
            raise InfraError("no Docker daemon answers at unix:///var/run/docker.sock (ConnectionError)")
        daemon.timeouts.append(timeout)
        return daemon

    monkeypatch.setattr(images, "client", client)


def _image_object(store, home, rootfs=LAYER):
    """An image object's manifest in ``store`` and REPRO_HOME (object file too), as a push leaves them."""
    from metaflow_repro.store import layout
    from metaflow_repro.store.images import ImageManifest

    body = b"zstd bytes"
    sha = hashlib.sha256(body).hexdigest()
    manifest = ImageManifest(sha, len(body), rootfs, 10, "0", "bookworm", "", "3.11")
    store.put_bytes(layout.image(sha), body)
    store.put_bytes(layout.image_manifest(sha), manifest.to_json().encode())
    home.images.mkdir(parents=True, exist_ok=True)
    (home.images / f"{sha}.tar.zst").write_bytes(body)
    (home.images / f"{sha}.json").write_text(manifest.to_json())
    (home.images / f"layer-{rootfs}").write_text(sha + "\n")
    return sha


def _request(tmp_path, executor, run_options=(), extra_args=()):
    from types import SimpleNamespace

    from metaflow_repro.executors.base import ReplayRequest
    from metaflow_repro.executors.batch import BatchPlace
    from metaflow_repro.model.interpreter import Executor, ExecutorKind
    from tests.helpers import make_record

    store = LocalStore(str(tmp_path / "store"))
    original = replace_record(make_record(), executor=executor, run_options=tuple(run_options))
    return ReplayRequest(
        original=original,
        store=store,
        settings=SimpleNamespace(home=Home(tmp_path / "home")),  # type: ignore[arg-type]
        place=BatchPlace(),
        executor=Executor(ExecutorKind.BATCH),
        ref="F/1",
        extra_args=tuple(extra_args),
    )


def replace_record(record, **changes):
    from dataclasses import replace

    return replace(record, **changes)


def test_a_run_records_a_registry_digest_only_when_its_image_name_pins_one(tmp_path, monkeypatch):
    """The daemon here may have pulled the tag long ago: its RepoDigests are never what the jobs ran."""
    from metaflow_repro.executors.batch import batch_executor

    stale = _FakeImage([LAYER, OTHER_LAYER], repo_digests=[f"reg.io/team/job@{DIGEST}"])
    daemon = _FakeDaemon({"reg.io/team/job:3": stale, f"reg.io/team/job@{DIGEST}": stale})
    _daemon(monkeypatch, daemon)
    said: list[str] = []
    home, env = Home(tmp_path), {"METAFLOW_BATCH_CONTAINER_REGISTRY": ""}
    ran = batch_executor(["--with", "batch:image=reg.io/team/job:3"], env, home, said.append)
    assert (ran.image, ran.image_digest, ran.image_sha256) == ("reg.io/team/job:3", "", "")
    assert "digest the jobs ran is not known" in said[-1] and "reg.io/team/job@sha256:" in said[-1]
    assert daemon.timeouts == [5]  # a short probe: a dead DOCKER_HOST never holds the run for ten minutes
    ran = batch_executor(["--with", f"batch:image=reg.io/team/job@{DIGEST}"], env, home, said.append)
    assert ran.image_digest == DIGEST
    _daemon(monkeypatch, None)  # no daemon here: the name, and the digest it pins
    ran = batch_executor(
        ["--with", "batch:cpu=2"], {"METAFLOW_BATCH_CONTAINER_IMAGE": "team/job:3", **env}, home, said.append
    )
    assert (ran.image, ran.image_digest) == ("team/job:3", "") and "not known" in said[-1]
    assert "not in a Docker daemon here" in said[-1]


def test_a_run_in_an_image_of_repros_records_its_store_object(tmp_path, monkeypatch):
    from metaflow_repro.executors.batch import batch_executor, image_identity

    home = Home(tmp_path / "home")
    sha = _image_object(LocalStore(str(tmp_path / "store")), home)
    labels = {"org.repro.python": "3.11"}
    _daemon(
        monkeypatch, _FakeDaemon({"repro-batch-job:1": _FakeImage([LAYER], labels), "plain:1": _FakeImage([LAYER])})
    )
    assert image_identity("repro-batch-job:1", home, print).executor.image_sha256 == sha  # found by its layer
    assert image_identity("plain:1", home, print).executor.image_sha256 == ""  # not an image of repro's
    # a fresh REPRO_HOME (CI): the store's object of that root file system, fetched, not packed (this fake
    # daemon cannot `docker save`)
    fresh, store = Home(tmp_path / "fresh"), LocalStore(str(tmp_path / "store"))
    env = {"METAFLOW_BATCH_CONTAINER_IMAGE": "repro-batch-job:1", "METAFLOW_BATCH_CONTAINER_REGISTRY": ""}
    assert batch_executor(["--with", "batch"], env, fresh, print, store).image_sha256 == sha
    assert (fresh.images / f"layer-{LAYER}").read_text().strip() == sha


def test_a_replay_refuses_any_other_image_under_the_recorded_name(tmp_path, monkeypatch):
    """Held under the recorded name: the recorded root file system, or refused (exit 2), whatever it is."""
    from metaflow_repro.errors import BadInput
    from metaflow_repro.executors.batch import replay_image
    from metaflow_repro.model.interpreter import Executor, ExecutorKind

    request = _request(tmp_path, Executor(ExecutorKind.BATCH, "repro-batch-job:1", image_sha256="0" * 64))
    sha = _image_object(request.store, request.settings.home)
    request = _request(tmp_path, Executor(ExecutorKind.BATCH, "repro-batch-job:1", image_sha256=sha))
    labels = {"org.repro.python": "3.11"}
    for held, why in (
        (_FakeImage([LAYER, OTHER_LAYER], labels), "an image of 2 layers"),
        (_FakeImage([OTHER_LAYER]), "another root file system"),  # unlabelled, one layer
    ):
        _daemon(monkeypatch, _FakeDaemon({"repro-batch-job:1": held}))
        with pytest.raises(BadInput, match=why) as refused:
            replay_image(request, print)
        assert refused.value.exit_code == 2 and sha[:12] in str(refused.value)
    _daemon(monkeypatch, _FakeDaemon({"repro-batch-job:1": _FakeImage([LAYER])}))  # the same bytes, any labels
    assert replay_image(request, print).image_sha256 == sha


def test_a_replay_that_cannot_check_the_recorded_image_says_why_and_runs(tmp_path, monkeypatch):
    import docker.errors

    from metaflow_repro.executors.batch import replay_image
    from metaflow_repro.model.interpreter import Executor, ExecutorKind

    sha = "3" * 64  # the store lacks its manifest
    request = _request(tmp_path, Executor(ExecutorKind.BATCH, "repro-batch-job:1", image_sha256=sha))
    said: list[str] = []
    _daemon(monkeypatch, _FakeDaemon({"repro-batch-job:1": _FakeImage([LAYER])}))
    assert replay_image(request, said.append).image_sha256 == ""
    assert "cannot check" in said[-1] and "manifest cannot be read" in said[-1]
    _daemon(monkeypatch, _FakeDaemon(fail=docker.errors.APIError("500 Server Error: inspect failed")))
    assert replay_image(request, said.append).image_sha256 == ""
    assert "cannot check" in said[-1] and "no Docker daemon here holds it" in said[-1]
    _daemon(monkeypatch, None)
    assert replay_image(request, said.append).image == "repro-batch-job:1" and "cannot check" in said[-1]


def test_a_replay_pins_a_recorded_batch_image_option_and_names_the_image_its_jobs_run(tmp_path, monkeypatch):
    """Metaflow's `--with batch:image=` beats METAFLOW_BATCH_CONTAINER_IMAGE: the recorded option is pinned
    to the digest; `-- --with batch:cpu=4` drops it, and the pinned name comes from the environment."""
    from metaflow_repro.executors.batch import BatchPlace, replay_image
    from metaflow_repro.model.interpreter import Executor, ExecutorKind

    ran = Executor(ExecutorKind.BATCH, "reg.io/team/job:3", image_digest=DIGEST)
    recorded = ["--max-workers", "2", "--with", "batch:cpu=2,image=reg.io/team/job:3"]
    placed, dropped = BatchPlace().place(recorded, (), ran)
    assert placed == ["--max-workers", "2", "--with", f"batch:cpu=2,image=reg.io/team/job@{DIGEST}"] and not dropped
    assert BatchPlace().place(["--with=batch:image=a:1"], (), ran) == (
        [f"--with=batch:image=reg.io/team/job@{DIGEST}"],
        [],
    )
    assert BatchPlace().place(recorded, ["--with", "batch:cpu=4"], ran)[1] == recorded[2:]
    assert BatchPlace().place(recorded, (), None)[0] == recorded  # no Batch run recorded: as it was
    _daemon(monkeypatch, None)
    monkeypatch.delenv("METAFLOW_BATCH_CONTAINER_REGISTRY", raising=False)
    for extra, image, given in (
        ((), f"reg.io/team/job@{DIGEST}", ""),
        (("--with", "batch:cpu=4"), f"reg.io/team/job@{DIGEST}", ""),
        (("--with", "batch:image=mine:2"), "mine:2", "mine:2"),
    ):
        now = replay_image(_request(tmp_path, ran, recorded, extra), print)
        assert (now.image, now.image_digest, now.image_given) == (image, DIGEST if not given else "", given)
