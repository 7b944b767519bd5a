"""The container's side of `repro replay --on docker` and the host's reading of what it hands back:
the result is a file in a mounted folder (never a line on stdout), decoded and checked on the host;
the replay's record is read back from the store, never taken from the container's word."""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import replace

import pytest

from metaflow_repro.errors import InfraError, ReproError
from metaflow_repro.executors import docker
from metaflow_repro.executors.base import ReplayRequest
from metaflow_repro.executors.local import LocalPlace
from metaflow_repro.model.interpreter import Executor, ExecutorKind
from metaflow_repro.model.replay import RunFailure, RunResult
from metaflow_repro.settings import load_settings
from metaflow_repro.store import layout, open_store
from tests.unit.model.test_record import make_record  # a record the strict decoder accepts

IMAGE = "sha256:" + "a" * 64
STATUS = {"StatusCode": 0}


@pytest.fixture
def request_(tmp_path):
    store = open_store((tmp_path / "store").as_uri())
    original = make_record()
    ref = f"{layout.flow_dir(original.flow, original.identity)}/{original.run_id}"
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    return ReplayRequest(original, store, settings, LocalPlace(), Executor(ExecutorKind.DOCKER, IMAGE), ref)


def test_a_container_that_wrote_no_result_is_an_infrastructure_error_showing_its_output(tmp_path, request_):
    with pytest.raises(InfraError) as err:
        docker._result(None, request_.original, STATUS, "last words")
    assert "ended (exit code 0) without a result" in str(err.value) and "last words" in str(err.value)


def test_a_malformed_result_is_an_infrastructure_error_naming_the_field(tmp_path, request_):
    doc = RunResult(Executor(ExecutorKind.DOCKER, IMAGE)).to_dict()
    doc["verdict"] = "identical"  # the container does not judge
    with pytest.raises(InfraError, match="unknown key 'verdict'"):
        docker._result(json.dumps(doc).encode(), request_.original, STATUS, "")


def test_an_error_in_the_container_is_raised_again_on_the_host_with_its_exit_code(request_):
    with pytest.raises(ReproError) as err:
        docker._with_record(RunResult(Executor(), error="no such run", error_code=2), request_, docker.Path("/d"))
    assert str(err.value) == "no such run" and err.value.exit_code == 2


def test_the_replays_record_is_read_back_from_the_store_and_must_be_a_replay_of_the_original(request_):
    store, original = request_.store, request_.original
    replayed = replace(make_record(), run_id="9", replay_of=original.ref)
    key = layout.record(layout.flow_dir(replayed.flow, replayed.identity), "9")
    store.put_bytes(key, replayed.to_json().encode())
    ran = RunResult(Executor(ExecutorKind.DOCKER, IMAGE), recorded=key, saved="/tmp/repro-home/x", failure=None)
    got = docker._with_record(ran, request_, docker.Path("/docker/abc"))
    assert got.record == replayed and got.workdir == "/docker/abc" and got.saved == ""
    other = replace(replayed, run_id="10", replay_of="")
    key10 = layout.record(layout.flow_dir(other.flow, other.identity), "10")
    store.put_bytes(key10, other.to_json().encode())
    with pytest.raises(InfraError, match="is not a replay of"):
        docker._with_record(replace(ran, recorded=key10), request_, docker.Path("/d"))
    with pytest.raises(InfraError, match="not one"):
        docker._with_record(replace(ran, recorded="pythons/x.json"), request_, docker.Path("/d"))


def test_a_replay_that_did_not_start_comes_back_without_a_record(request_):
    ran = RunResult(Executor(ExecutorKind.DOCKER, IMAGE), failure=RunFailure("no Metaflow in the package"))
    got = docker._with_record(ran, request_, docker.Path("/docker/abc"))
    assert got.record is None and got.failure == RunFailure("no Metaflow in the package")


def _tar(*members: tuple[str, bytes | None, bytes]) -> bytes:
    """A tar archive of (name, link target or None, body) members, as the daemon's archive of a path is."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w") as tar:
        for name, link, body in members:
            info = tarfile.TarInfo(name)
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link.decode()
                tar.addfile(info)
            else:
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
    return out.getvalue()


def test_the_result_is_the_one_regular_file_copied_out_of_the_container():
    assert docker.result_member(_tar((docker.RESULT_FILE, None, b"{}"))) == b"{}"


@pytest.mark.parametrize(
    "members",
    [
        [(docker.RESULT_FILE, b"/root/.aws/credentials", b"")],  # a link to a file of the host's, or anywhere
        [(docker.RESULT_FILE, None, b"{}"), ("more", None, b"x")],
        [("other.json", None, b"{}")],
    ],
)
def test_a_result_that_is_a_link_or_not_alone_is_refused_unread(members):
    with pytest.raises(InfraError, match="not one regular file"):
        docker.result_member(_tar(*members))


def test_a_result_over_the_limit_is_refused(monkeypatch):
    monkeypatch.setattr(docker, "MAX_RESULT_BYTES", 10)
    with pytest.raises(InfraError, match="larger than 10 bytes"):
        docker.result_member(_tar((docker.RESULT_FILE, None, b"x" * 11)))


def test_a_replay_that_ran_but_wrote_no_record_says_so(request_):
    got = docker._with_record(RunResult(Executor(ExecutorKind.DOCKER, IMAGE)), request_, docker.Path("/d"))
    assert got.record is None and got.failure is not None
    assert "its record could not be written" in got.failure.error
