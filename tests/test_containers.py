"""Container infrastructure: our Docker daemon and `repro image build` (real daemon, real debootstrap)."""

from __future__ import annotations

import time

import pytest

from tests import containers
from tests.helpers import cli

pytestmark = pytest.mark.slow


def test_daemon_has_no_networking_of_its_own(docker_daemon):
    """Only the host network: no bridge network exists, so containers cannot reach anything but via the host."""
    import docker

    c = docker.DockerClient(base_url=docker_daemon)
    drivers = {n.attrs["Driver"] for n in c.networks.list()}
    assert "bridge" not in drivers, drivers
    assert containers.DOCKERD_NETWORK_FLAGS == (
        "--bridge=none",
        "--iptables=false",
        "--ip-masq=false",
        "--host-gateway-ip=127.0.0.1",
    )


def test_image_build_is_cached_by_recipe_and_has_the_bootstrap_python(base_image, docker_daemon):
    import docker

    from metaflow_repro.containers import image

    assert base_image.tag == image.default_recipe().tag
    started = time.monotonic()
    r = cli("image", "build")
    assert r.code == 0, r.text
    assert "already built" in r.out and base_image.id in r.out
    assert time.monotonic() - started < 90  # an import alone takes 20-40 s; a debootstrap minutes
    c = docker.DockerClient(base_url=docker_daemon)
    out = c.containers.run(
        base_image.tag,
        ["python", "-c", "import boto3, requests, ssl, sys; print('%d.%d' % sys.version_info[:2])"],
        network_mode="host",
        remove=True,
    )
    assert out.decode().strip() == base_image.python


def test_the_default_replay_image_is_python_slim_when_the_daemon_has_it(base_image, docker_daemon, repro_home):
    import docker

    from metaflow_repro.executors.docker import default_image
    from metaflow_repro.settings import load_settings

    c = docker.DockerClient(base_url=docker_daemon)
    settings = load_settings(repro_home)
    assert default_image("3.11", settings, lambda m: None, c) == (base_image.tag, base_image.python)
    c.images.get(base_image.tag).tag("python", "3.11-slim")  # as if pulled from a registry
    try:
        assert default_image("3.11", settings, lambda m: None, c) == ("python:3.11-slim", "3.11")
        assert default_image("3.12", settings, lambda m: None, c)[0] == base_image.tag
    finally:
        c.images.remove("python:3.11-slim")


def test_the_container_gets_only_the_store_and_repro_settings(monkeypatch, repro_home):
    from metaflow_repro.executors.docker import CLOSED_PROXY, container_env
    from metaflow_repro.settings import load_settings

    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://127.0.0.1:4566")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("REPRO_FROZEN", "1")
    monkeypatch.setenv("GITHUB_TOKEN", "secret")
    monkeypatch.setenv("UV_INDEX_URL", "https://pypi.org/simple")
    env = container_env("s3://bucket/team", load_settings(repro_home))
    assert env["AWS_ENDPOINT_URL_S3"] == "http://127.0.0.1:4566" and env["AWS_ACCESS_KEY_ID"] == "key"
    assert env["REPRO_FROZEN"] == "1" and env["REPRO_STORE"] == "s3://bucket/team"
    assert env["REPRO_HOME"] == "/tmp/repro-home"  # empty, the container's own
    assert "GITHUB_TOKEN" not in env and "UV_INDEX_URL" not in env
    assert env["HTTPS_PROXY"] == env["HTTP_PROXY"] == CLOSED_PROXY and env["NO_PROXY"] == "127.0.0.1,localhost"
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3")
    assert container_env("s3://bucket/team", load_settings(repro_home))["NO_PROXY"].endswith(",.amazonaws.com")
