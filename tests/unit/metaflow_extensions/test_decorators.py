"""The instance cache's volume on a Batch step (decorators.with_volume,
CondaStepDecorator._mount_instance_cache)."""

from __future__ import annotations

import pytest


def test_the_instance_cache_is_mounted_beside_the_users_own_host_volumes():
    from metaflow_extensions.repro.plugins.decorators import with_volume

    assert with_volume(None, "/var/cache/repro") == ["/var/cache/repro"]
    assert with_volume("/data", "/var/cache/repro") == ["/data", "/var/cache/repro"]
    assert with_volume(["/data", "/x:/y"], "/c") == ["/data", "/x:/y", "/c"]
    # mounted already as it would be: as it is
    assert with_volume("/var/cache/repro", "/var/cache/repro") == ["/var/cache/repro"]
    assert with_volume(["/var/cache/repro:/var/cache/repro"], "/var/cache/repro") == [
        "/var/cache/repro:/var/cache/repro"
    ]
    # the user's volumes use the folder otherwise: theirs, no cache (a second volume of that name is refused)
    assert with_volume(["/mnt/fast:/var/cache/repro"], "/var/cache/repro") is None
    assert with_volume(["/var/cache/repro:/data"], "/var/cache/repro") is None
    assert with_volume(None, "/var/cache/repro", efs_volumes="fs-1234:/var/cache/repro") is None
    assert with_volume(None, "/var/cache/repro", efs_volumes=["fs-1234"]) == ["/var/cache/repro"]


@pytest.mark.parametrize("batch_first", [False, True])
def test_a_batch_steps_job_mounts_the_instance_cache_whichever_decorator_runs_first(batch_first, monkeypatch):
    """Metaflow calls each decorator's runtime_step_cli in turn; @batch copies its attributes into the
    command's options: the volume reaches `batch step` whether ours ran before or after it."""
    from types import SimpleNamespace

    import metaflow.plugins  # noqa: F401  (Metaflow loads the extension first, as in a run)

    from metaflow_extensions.repro.plugins.decorators import CondaStepDecorator
    from metaflow_repro.executors import batch as batch_module

    monkeypatch.setitem(batch_module._PLATFORMS, "ec2-queue", "EC2")
    batch = SimpleNamespace(name="batch", attributes={"queue": "ec2-queue", "host_volumes": ["/data"]})
    ours = CondaStepDecorator.__new__(CondaStepDecorator)
    ours._decos = [batch, ours]
    cli_args = SimpleNamespace(command_options={})
    if batch_first:
        cli_args.command_options.update(batch.attributes)  # as BatchDecorator.runtime_step_cli does
    assert ours._mount_instance_cache(cli_args, "/var/cache/repro") == "/var/cache/repro"
    if not batch_first:
        cli_args.command_options.update(batch.attributes)
    assert cli_args.command_options["host_volumes"] == ["/data", "/var/cache/repro"]
    monkeypatch.setitem(batch_module._PLATFORMS, "fargate-queue", "FARGATE")
    batch.attributes.update(queue="fargate-queue", host_volumes=None)
    assert ours._mount_instance_cache(SimpleNamespace(command_options={}), "/var/cache/repro") == ""
    assert batch.attributes["host_volumes"] is None
