"""The executor seam: places are found through the ``repro_executors`` hook by kind and by name, each
place says what it places and passes, and a replay's ``RunResult`` crosses the container boundary as
a document the host checks like any other untrusted input."""

from __future__ import annotations

from dataclasses import replace

import pytest

from metaflow_repro import executors, hooks
from metaflow_repro.errors import BadInput
from metaflow_repro.executors.base import Place
from metaflow_repro.executors.batch import BatchPlace
from metaflow_repro.executors.docker import DockerPlace
from metaflow_repro.executors.local import LocalPlace
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.replay import RunFailure, RunResult
from metaflow_repro.settings import REPLAY_PLACES
from tests.helpers import make_record


class FakePlace(LocalPlace):
    """A plugin's place: runs ``here`` and says so."""

    def __init__(self, kind: ExecutorKind):
        self.kind = kind
        self.ran: list[str] = []

    def run(self, request, here, log):
        self.ran.append(request.ref)
        return RunResult(Executor(self.kind), failure=RunFailure("no cluster today"))


@pytest.fixture
def plugin():
    """Register a plugin answering ``repro_executors`` with the places it is given; unregistered after."""
    registered = []

    def register(*places):
        class Plugin:
            @hooks.hookimpl
            def repro_executors(self):
                return list(places)

        obj = Plugin()
        hooks.manager().register(obj, name=f"test-executors-{len(registered)}")
        registered.append(obj)
        return obj

    yield register
    for obj in registered:
        hooks.manager().unregister(obj)


def test_the_builtin_places_are_found_by_kind_and_by_name():
    found = executors.places()
    assert list(found) == [ExecutorKind.LOCAL, ExecutorKind.DOCKER, ExecutorKind.BATCH]
    assert isinstance(executors.get(ExecutorKind.DOCKER), DockerPlace)
    assert isinstance(executors.for_place("batch"), BatchPlace)
    assert all(isinstance(p, Place) for p in found.values())


def test_the_places_settings_accept_are_the_executor_kinds_and_the_registered_places():
    # settings sits below the model, so it spells the names: this keeps the three in step
    assert REPLAY_PLACES == tuple(k.value for k in ExecutorKind) == tuple(k.value for k in executors.places())


def test_an_unknown_place_is_refused_naming_the_places_there_are():
    with pytest.raises(BadInput) as err:
        executors.for_place("kubernetes", option="--repro-on")
    assert str(err.value) == "--repro-on kubernetes: not a place to replay (local, docker, batch)"


def test_a_plugins_place_is_found_through_the_hook_and_replaces_the_builtin_of_its_kind(plugin):
    fake = FakePlace(ExecutorKind.DOCKER)
    plugin(fake)
    assert executors.get(ExecutorKind.DOCKER) is fake and executors.for_place("docker") is fake
    assert isinstance(executors.get(ExecutorKind.LOCAL), LocalPlace)  # the others stay


def test_a_kind_no_place_provides_is_refused(monkeypatch):
    monkeypatch.setattr(executors, "places", lambda: {ExecutorKind.LOCAL: LocalPlace()})
    with pytest.raises(BadInput, match="no executor runs 'batch' here \\(places: local\\)"):
        executors.get(ExecutorKind.BATCH)


def test_the_replay_operation_asks_the_place_and_judges_what_it_returns(plugin, tmp_path):
    from metaflow_repro.operations.replay import ReplayVerdict, replay
    from metaflow_repro.settings import load_settings
    from metaflow_repro.store import layout, open_store
    from tests.unit.model.test_record import make_record as a_valid_record  # one the strict decoder accepts

    fake = FakePlace(ExecutorKind.DOCKER)  # no daemon: the plugin's place replaces the built-in
    plugin(fake)
    store = open_store((tmp_path / "store").as_uri())
    record = a_valid_record()
    ref = f"{layout.flow_dir(record.flow, record.identity)}/{record.run_id}"
    store.put_bytes(layout.record(*ref.split("/")), record.to_json().encode())
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    result = replay(ref, store.uri, settings, on="docker", log=lambda m: None)
    assert fake.ran == [ref]
    assert result.verdict is ReplayVerdict.FAILED and result.failure == RunFailure("no cluster today")
    assert result.replayed is None and result.exit_code == 3


RECORDED = ["--max-workers", "2", "--with", "batch:cpu=2", "--tag", "t"]


@pytest.mark.parametrize("place", [LocalPlace(), DockerPlace()])
def test_local_and_docker_place_no_step_on_batch(place):
    assert place.place(RECORDED) == (["--max-workers", "2", "--tag", "t"], ["--with", "batch:cpu=2"])
    with pytest.raises(BadInput, match="never sends a step to AWS Batch"):
        place.check_args(["--with", "batch"], None)


def test_batch_places_every_step_on_batch():
    place = BatchPlace()
    assert place.place(RECORDED) == (RECORDED, [])
    assert place.place(["--tag", "t"]) == (["--tag", "t", "--with", "batch"], [])
    place.check_args(["--with", "batch:memory=1"], None)  # the user's own spec is welcome


@pytest.mark.parametrize("place", [LocalPlace(), BatchPlace()])
def test_only_docker_runs_an_image(place):
    with pytest.raises(BadInput, match="--image is for container replays"):
        place.check_args([], "python:3.11-slim")
    DockerPlace().check_args([], "python:3.11-slim")


BASE = {"METAFLOW_DATASTORE_SYSROOT_LOCAL": "/w", "METAFLOW_DEFAULT_DATASTORE": "local", "X": "1"}


def test_each_place_passes_its_datastore():
    local_run, s3_run = (
        replace(make_record(), datastore={"type": "local", "root": "/mf"}),
        replace(make_record(), datastore={"type": "s3", "root": "s3://b/mf"}),
    )
    notes: list[str] = []
    assert LocalPlace().environment(local_run, "file:///s", BASE, notes.append) == BASE and not notes
    env = LocalPlace().environment(s3_run, "file:///s", BASE, notes.append)
    assert env == {"X": "1", "METAFLOW_DEFAULT_DATASTORE": "s3"} and "had an S3 datastore" in notes[0]
    env = BatchPlace().environment(local_run, "s3://b/p", BASE, notes.append)
    assert env["METAFLOW_DEFAULT_DATASTORE"] == "s3" and "METAFLOW_DATASTORE_SYSROOT_LOCAL" not in env
    assert env["REPRO_STORE"] == "s3://b/p" and env["X"] == "1"


def test_batch_refuses_a_record_without_an_s3_datastore():
    BatchPlace().check_record(replace(make_record(), datastore={"type": "s3", "root": "s3://b/mf"}))
    with pytest.raises(BadInput, match="cannot be replayed with --on batch"):
        BatchPlace().check_record(replace(make_record(), datastore={"type": "local", "root": "/mf"}))
    LocalPlace().check_record(make_record())


def test_what_each_place_says_ran_the_replay(monkeypatch):
    monkeypatch.setenv("METAFLOW_BATCH_CONTAINER_IMAGE", "img:1")
    assert LocalPlace().executor() == Executor()
    assert DockerPlace().executor().kind is ExecutorKind.DOCKER
    assert BatchPlace().executor() == Executor(ExecutorKind.BATCH, "img:1")


# -- the RunResult codec ---------------------------------------------------------------------------


def test_a_replays_arguments_keep_where_each_comes_from_and_the_users_come_last():
    from metaflow_repro.executors.base import ReplayArgs

    args = ReplayArgs(("--x", "1"), ("--tag", "t"), ("--with", "batch"), ("--tag", "mine"))
    assert args.metaflow_args == ("--x", "1", "--tag", "t", "--tag", "mine")  # after --, last
