"""Fixtures only (helpers the tests import are in tests/helpers.py). Everything runs for real: uv
against the package index, real interpreters, real subprocesses. One REPRO_HOME per test session
keeps downloads and builds shared.

Missing prerequisites (a pyenv interpreter, `unshare`, Chromium) skip through
``helpers.require``; under CI=true the hook below turns those skips into failures that name what
is missing, so CI can never pass by skipping."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import MISSING, _wait_for_port, free_port

pytest_plugins = ["pytester"]


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if not (
        in_ci()
        and report.skipped
        and call.excinfo is not None
        and isinstance(call.excinfo.value, pytest.skip.Exception)
    ):
        return
    reason = str(call.excinfo.value.msg or "")
    if reason.startswith(MISSING):
        report.outcome = "failed"
        report.longrepr = f"CI=true: {reason} (a CI run must not pass by skipping; install it)"


def pytest_collection_modifyitems(config, items):
    """A 900 s timeout per test where pytest-timeout is installed (the test extra). Not an ini key:
    the main job (`pytest --repro scenarios/`, no test extra) would warn about an unknown option."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(900))


@pytest.fixture(scope="session", autouse=True)
def repro_home(tmp_path_factory) -> Path:
    home = tmp_path_factory.mktemp("repro-home")
    from metaflow_repro.settings import SETTINGS

    # every REPRO_* setting of the developer's shell is kept out of the tests
    names = [x.env for x in SETTINGS if x.env and x.env.startswith("REPRO_")] + ["METAFLOW_USER"]
    saved = {k: os.environ.get(k) for k in names}
    for k in saved:
        os.environ.pop(k, None)
    os.environ["REPRO_HOME"] = str(home)
    os.environ["METAFLOW_USER"] = "repro-tests"
    yield home
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture
def flow_dir(tmp_path) -> Path:
    return tmp_path / "proj"


@pytest.fixture(scope="session")
def s3_server():
    """moto's S3 server as a subprocess; AWS_* variables point boto3 (and every CLI call) at it."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port)
        saved = {
            k: os.environ.get(k)
            for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL_S3")
        }
        os.environ.update(
            {
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{port}",
            }
        )
        yield f"http://127.0.0.1:{port}"
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture
def s3_bucket(s3_server, request) -> str:
    import re
    import uuid

    import boto3

    name = re.sub(r"[^a-z0-9-]", "-", request.node.name.lower())[:40].strip("-") + "-" + uuid.uuid4().hex[:8]
    boto3.client("s3", endpoint_url=s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="session")
def base_wheels(repro_home, tmp_path_factory) -> Path:
    """Wheels every env needs, for ``local_index``: requests and its dependencies (the implicit
    Metaflow need) and six 1.16.0, copied from the package cache after one real build."""
    import shutil

    from tests.helpers import cli, write_flow

    work = tmp_path_factory.mktemp("base-wheels")
    path = write_flow(
        work / "seed",
        """
        from metaflow import FlowSpec, step, pypi
        class SeedFlow(FlowSpec):
            @pypi(packages={"six": "1.16.0"})
            @step
            def start(self):
                self.next(self.end)
            @step
            def end(self):
                pass
    """,
    )
    r = cli("env", "build", path)
    assert r.code == 0, r.text
    links = work / "wheels"
    links.mkdir()
    import re

    wanted = set(re.findall(r'^file = "(.+\.whl)"$', (work / "seed" / "flow.repro.lock").read_text(), re.M))
    for wheel in (repro_home / "packages").rglob("*.whl"):
        if wheel.name in wanted:
            shutil.copy(wheel, links / wheel.name)
    assert {"six", "requests", "urllib3"} <= {w.name.split("-")[0] for w in links.iterdir()}
    return links


@pytest.fixture
def local_index(base_wheels, tmp_path) -> dict:
    """Settings (environment variables) for resolving from a local find-links folder only: the
    index is an empty local folder, so a name somebody could publish on PyPI is never picked up
    from there. The folder is this test's own copy of ``base_wheels``; add wheels to it with
    ``helpers.make_wheel(Path(local_index["REPRO_FIND_LINKS"]), ...)``."""
    import shutil

    links, empty = tmp_path / "links", tmp_path / "empty-index"
    shutil.copytree(base_wheels, links)
    empty.mkdir()
    return {"REPRO_FIND_LINKS": str(links), "REPRO_INDEX_URL": empty.as_uri()}


#: The local conda channel the conda tests use (no public channel is reachable here): a python
#: package made from the interpreter running the tests, the seed scenarios' libraries (scikit-learn, two numpys), two
#: versions of six, a compiled extension (markupsafe), Metaflow's needs (requests), a package with
#: a '..' member and one whose repodata sha256 does not match its bytes.
CONDA_CHANNEL = dict(
    pythons=[".".join(map(str, sys.version_info[:3]))],  # flows default to the Python running them
    wheels=[
        "six==1.16.0",
        "six==1.17.0",
        "requests==2.32.3",
        "markupsafe==2.1.5",
        "numpy==1.26.4",
        "numpy==2.1.3",
        "scikit-learn==1.5.2",
    ],
    dotdot=["evil-dotdot"],
    bad_sha=["six==1.17.0"],
)


@pytest.fixture(scope="session")
def conda_channel(repro_home) -> Path:
    """The channel folder, built once per content key under the system's temporary folder (shared
    by sessions and xdist workers; a test that changes a channel copies it first)."""
    import tempfile

    from metaflow_repro.testing.conda_channel import cached_channel

    return cached_channel(Path(tempfile.gettempdir()) / "repro-test-channels", **CONDA_CHANNEL)


@pytest.fixture(scope="session")
def docker_daemon():
    """A Docker daemon (DOCKER_HOST): the one that answers there, or one started for this session
    (tests/containers.py) and stopped at its end. Skips naming what is missing (fails under CI=true)."""
    from tests import containers
    from tests.helpers import require

    try:
        daemon = containers.start()
    except RuntimeError as exc:
        require(False, f"a Docker daemon ({exc})")
    saved = os.environ.get("DOCKER_HOST")
    os.environ["DOCKER_HOST"] = daemon.host
    yield daemon.host
    if saved is None:
        os.environ.pop("DOCKER_HOST", None)
    else:
        os.environ["DOCKER_HOST"] = saved
    daemon.stop()


@pytest.fixture(scope="session")
def base_image(docker_daemon, repro_home):
    """`repro image build`'s image, once per session (a daemon that has the tag skips the build)."""
    from metaflow_repro.containers import image
    from metaflow_repro.settings import Home

    return image.build(Home(repro_home), log=lambda m: None)


@pytest.fixture(scope="session")
def batch_world(docker_daemon, base_image):
    """AWS Batch on moto (tests/batch_setup.py): its own moto server running jobs in our daemon on
    the host network, a bucket, roles, a MANAGED compute environment, a queue and the job image.
    ``.env``: the settings a Metaflow/repro process needs to use it. Stopped at the session's end."""
    from tests import batch_setup

    proc, endpoint = batch_setup.start_moto(docker_daemon)
    world = None
    try:
        world = batch_setup.make_world(endpoint, docker_daemon, base_image.tag)
        yield world
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        if world is not None:
            shutil.rmtree(world.cache, ignore_errors=True)
