"""Re-locking a flow, the bookkeeping around resolution (``engine.lock_flow`` with the resolver
replaced): which steps and platforms are kept, which are resolved (once per spec, platform and
Python), and the change lines ``repro lock`` prints."""

from types import SimpleNamespace

import pytest

from metaflow_repro.env import engine
from metaflow_repro.model.lock import PlatformLock
from metaflow_repro.model.spec import EnvSpec
from tests.helpers import pkg

LINUX, MAC = "linux-64", "osx-arm64"


def spec(step, six="1.0", disabled=False, python="3.11.7"):
    return EnvSpec("F", step, "pypi", "pypi", python, libraries=(("six", six),), disabled=disabled)


@pytest.fixture
def index(monkeypatch):
    """What the fake resolver answers (name -> version for every package it resolves), and its calls."""
    state = SimpleNamespace(versions={"six": "1.0", "idna": "3.10"}, name_map=(), calls=[])

    def resolve(flow, spec, platform, python, previous=None):
        state.calls.append((spec.step, platform, python, previous))
        packages = [pkg("six", spec.libraries[0][1]), pkg("idna", state.versions["idna"])]
        return PlatformLock(platform, python, tuple(packages), name_map=state.name_map)

    monkeypatch.setattr(engine, "resolve", resolve)
    return state


def flow_of(tmp_path, specs, lock=None, platforms=(LINUX,)):
    decl = SimpleNamespace(name="F")
    return engine.Flow(tmp_path / "f.py", decl, specs, SimpleNamespace(platforms=platforms), lock)


def relock(tmp_path, specs, before, platforms=(LINUX,), **kwargs):
    logged = []
    result = engine.lock_flow(
        flow_of(tmp_path, specs, before.lock, platforms), log=logged.append, write=False, **kwargs
    )
    return result, logged


@pytest.fixture
def first(tmp_path, index):
    """A first lock: start and train share one spec (one resolution), end is disabled."""
    specs = {"start": spec("start"), "train": spec("train"), "end": spec("end", disabled=True)}
    logged = []
    flow = flow_of(tmp_path, specs)
    result = engine.lock_flow(flow, log=logged.append)
    assert result.written and flow.lock is result.lock and flow.lock_file.is_file()
    assert logged == ["resolving F.start for linux-64 (Python 3.11.7): six==1.0"]
    assert index.calls == [("start", LINUX, "3.11.7", None)]
    index.calls.clear()
    return result


def test_a_first_lock_names_every_step_as_new(first):
    env = first.lock.steps["start"].platforms[LINUX].env_id
    assert first.changes == {
        "start": ["+ new step", f"linux-64: 2 packages (1 stated), env {env[:12]}"],
        "train": ["+ new step", f"linux-64: 2 packages (1 stated), env {env[:12]}"],
        "end": ["+ new step (disabled)"],
    }
    assert list(first.lock.steps) == ["end", "start", "train"] and first.lock.steps["end"].platforms == {}


def test_an_unchanged_flow_resolves_nothing_and_writes_nothing(tmp_path, index, first):
    flow = flow_of(tmp_path, {"start": spec("start"), "train": spec("train"), "end": spec("end", disabled=True)})
    flow.lock = first.lock
    again = engine.lock_flow(flow)
    assert (again.lock, again.written, again.changes, index.calls) == (first.lock, False, {}, [])


def test_a_changed_step_is_resolved_again_from_its_previous_lock_and_its_changes_listed(tmp_path, index, first):
    index.versions["idna"] = "3.11"
    specs = {"start": spec("start", six="1.1"), "train": spec("train"), "end": spec("end", disabled=True)}
    result, logged = relock(tmp_path, specs, first)
    assert index.calls == [("start", LINUX, "3.11.7", first.lock.steps["start"].platforms[LINUX])]
    assert logged == ["resolving F.start for linux-64 (Python 3.11.7): six==1.1"]
    assert result.changes == {
        "start": [
            "~ six 1.0 -> 1.1",
            "linux-64: ~ idna 3.10 -> 3.11 (transitive)",
            "linux-64: ~ six 1.0 -> 1.1 (stated)",
        ]
    }
    assert result.lock.steps["train"] == first.lock.steps["train"]


def test_a_re_resolution_to_the_same_packages_says_so(tmp_path, index, first):
    index.name_map = (("pytorch", "torch"),)
    specs = {"start": spec("start", python="==3.11.7"), "train": spec("train"), "end": spec("end", disabled=True)}
    result, _ = relock(tmp_path, specs, first)
    assert result.changes == {"start": ["~ python 3.11.7 -> ==3.11.7", "linux-64: re-resolved, same packages"]}


def test_a_platform_added_is_resolved_for_every_step_and_kept_ones_are_reused(tmp_path, index, first):
    specs = {"start": spec("start", six="1.1"), "train": spec("train"), "end": spec("end", disabled=True)}
    result, _ = relock(tmp_path, specs, first, platforms=(LINUX, MAC))
    assert [c[:2] for c in index.calls] == [("start", LINUX), ("start", MAC), ("train", MAC)]
    mac = result.lock.steps["train"].platforms[MAC]
    assert result.changes["train"] == [f"osx-arm64: + platform added (2 packages, env {mac.env_id[:12]})"]
    # a step whose spec changed lists the new platform's packages instead
    assert result.changes["start"][-3:] == [
        "linux-64: ~ six 1.0 -> 1.1 (stated)",
        "osx-arm64: + idna 3.10 (transitive)",
        "osx-arm64: + six 1.1 (stated)",
    ]
    assert "end" not in result.changes


def test_a_platform_removed_and_a_step_disabled_or_removed_are_listed(tmp_path, index, first):
    specs = {"start": spec("start"), "end": spec("end", disabled=True)}
    result, _ = relock(tmp_path, specs, first, platforms=(MAC,), remove=[LINUX])
    mac = result.lock.steps["start"].platforms[MAC]
    assert result.changes["start"] == [
        "linux-64: - platform removed from the lock",
        f"osx-arm64: + platform added (2 packages, env {mac.env_id[:12]})",
    ]
    assert result.changes["train"] == ["- step removed from the flow"]
    disabled = {"start": spec("start", disabled=True), "train": spec("train"), "end": spec("end", disabled=True)}
    result, _ = relock(tmp_path, disabled, first)
    assert result.changes == {
        "start": ["~ disabled False -> True", "linux-64: - idna 3.10 (transitive)", "linux-64: - six 1.0 (stated)"]
    }
