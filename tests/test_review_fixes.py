"""Regressions found in review: each test fails without its fix."""

import os
import stat

import pytest

from metaflow_repro.checks.compare import compare
from metaflow_repro.checks.pickles import is_internal
from metaflow_repro.errors import BadInput, LockFileError
from metaflow_repro.model.lock import Package, PlatformLock
from metaflow_repro.model.record import ArtifactRecord, RunRecord, StepRecord, TaskRecord
from metaflow_repro.store import layout, open_store
from metaflow_repro.store.snapshot import _is_newest, parse_env_lock, record_packages


def record(run_id="1", steps=("start", "end"), created="2026-01-01T00:00:00+00:00", files=("a-1.0-py3-none-any.whl",)):
    art = {"x": ArtifactRecord(sha1="1" * 40, size=1, type="int")}
    env = PlatformLock("linux-64", "3.11.7", tuple(Package("a", "1.0", "pypi", f, "u", "a" * 64, 1) for f in files))
    return RunRecord(
        flow="F",
        run_id=run_id,
        flow_file="f.py",
        code_sha256="c" * 64,
        lock_sha256="d" * 64,
        parameters={},
        pythonhashseed="0",
        metaflow_version="2.19",
        repro_version="0",
        host={},
        datastore={},
        steps={
            s: StepRecord(
                spec_id="5" * 64,
                env_id=env.env_id,
                disabled=False,
                tasks={"-": TaskRecord(task_id="1", env_id=env.env_id, fingerprint="f", interpreter="", artifacts=art)},
            )
            for s in steps
        },
        envs={env.env_id: env},
        created_at=created,
        step_order=tuple(steps),
    )


def test_a_step_only_in_the_second_run_is_a_difference():
    result = compare(
        record(steps=("start", "end")),
        record(run_id="2", steps=("start", "extra", "end")),
        lambda s: None,
        lambda s: None,
        {},
    )
    assert not result.same
    assert any(r.step == "extra" and r.verdict == "different" for r in result.results)


@pytest.mark.parametrize("name", ["../../evil.whl", "/abs.whl", "a/b.whl", ".hidden.whl"])
def test_package_file_names_from_a_store_cannot_escape_the_cache(name):
    with pytest.raises(LockFileError, match="not a plain file name"):
        record_packages(record(files=(name,)))
    toml = (
        f'env_id = "x"\nplatform = "linux-64"\npython = "3.11.7"\n[[packages]]\nname = "a"\nversion = "1"\n'
        f'source = "pypi"\nfile = "{name}"\nurl = "u"\nsha256 = "{"a" * 64}"\nsize = 1\n'
    )
    with pytest.raises(Exception, match="not a plain file name"):
        parse_env_lock(toml.encode(), "x", "store/locks/x.toml")


def test_latest_never_moves_backwards(tmp_path):
    store = open_store(tmp_path.as_uri())
    newer = record(run_id="20", created="2026-06-01T00:00:00+00:00")
    store.put_bytes(layout.record("F", "20"), newer.to_json().encode())
    store.put_bytes(layout.latest("F"), b"20")
    assert not _is_newest(store, record(run_id="10", created="2026-01-01T00:00:00+00:00"))
    assert _is_newest(store, record(run_id="30", created="2026-07-01T00:00:00+00:00"))


def test_file_uris_with_a_host_part_are_refused():
    with pytest.raises(BadInput, match="three slashes"):
        open_store("file://store")
    assert open_store("file:///tmp/x").root.as_posix() == "/tmp/x"


def test_users_underscore_artifacts_are_compared_and_checked():
    assert not is_internal("_model") and not is_internal("name")
    assert is_internal("_foreach_stack") and is_internal("_transition") and is_internal("__secret")


def test_store_objects_and_locks_are_readable_by_others(tmp_path):
    store = open_store(tmp_path.as_uri())
    store.put_bytes("runs/F/1/record.json", b"{}")
    mode = stat.S_IMODE((tmp_path / "runs/F/1/record.json").stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask  # what open() would give, not mkstemp's 0600


def test_a_helper_module_that_mentions_flowspec_is_not_a_flow(pytester):
    """A private module (`_base.py`) holding a base flow class, a package's `__init__.py` and a module that
    only imports FlowSpec are not flows. (A public module defining a FlowSpec subclass repro cannot read is
    a collection error since issue 26 item 4: tests/test_flow_collection.py.)"""
    pytester.makepyfile(_base="from metaflow import FlowSpec\n\nclass Base(FlowSpec):\n    pass\n")
    pytester.makepyfile(__init__="from metaflow import FlowSpec\n")
    pytester.makepyfile(util="from metaflow import FlowSpec\n\nBASES = (FlowSpec,)\n")
    result = pytester.runpytest_subprocess("--repro", ".", "--collect-only", "-q", "-p", "no:cacheprovider")
    assert "error" not in result.stdout.str().lower()
    assert result.ret == 5  # nothing to collect, and nothing broke


def test_lock_file_keeps_its_permissions(tmp_path):
    from metaflow_repro.model.lock import write_lock
    from tests.helpers import sample_lock

    path = tmp_path / "flow.repro.lock"
    path.write_text("old")
    os.chmod(path, 0o644)
    assert write_lock(sample_lock(), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
