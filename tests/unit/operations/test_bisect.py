"""`repro bisect`'s operation, the parts that need no flow run: which hybrids uv cannot make (real uv
against a find-links folder the test writes), the kept answers read back as untrusted input, the
new environments a lock file gives, and the summary."""

from __future__ import annotations

import json

import pytest

from metaflow_repro.checks.bisect import Outcome, PackageChange, Search
from metaflow_repro.errors import BadInput
from metaflow_repro.model import platforms as plats
from metaflow_repro.model.lock import Lock, PlatformLock, StepLock, write_lock
from metaflow_repro.operations.bisect import BisectResult, Tried, _Answer, _cached, _Runner, lock_envs
from metaflow_repro.settings import load_settings
from tests.helpers import make_record, make_wheel, pkg

PY = "3.11.7"


def env(*packages):
    return PlatformLock(plats.local_platform_name(), PY, tuple(packages))


def test_a_hybrid_uv_cannot_resolve_is_unresolvable_and_says_why(tmp_path):
    links, empty = tmp_path / "links", tmp_path / "empty"
    empty.mkdir()
    make_wheel(links, "calc", "1.0")
    make_wheel(links, "calc", "1.1")
    make_wheel(links, "extra", "1.0")
    make_wheel(links, "aux-a", "1.0")
    make_wheel(links, "aux-a", "2.0", requires=("calc>=1.1", "extra"))
    settings = load_settings(
        tmp_path,
        environ={"REPRO_FIND_LINKS": str(links), "REPRO_INDEX_URL": empty.as_uri(), "REPRO_HOME": str(tmp_path)},
    )
    old = {"train": env(pkg("calc", "1.0"), pkg("aux-a", "1.0"))}
    runner = _Runner(lambda: pytest.fail("nothing runs"), make_record(), None, settings, old, print)  # type: ignore[arg-type]
    conflict = runner._unresolvable({"train": env(pkg("calc", "1.0"), pkg("aux-a", "2.0"), pkg("extra", "1.0"))})
    assert conflict.startswith("step train: cannot resolve [aux-a==2.0, calc==1.0, extra==1.0]"), conflict
    assert "Because aux-a>=2.0 depends on calc>=1.1" in conflict, conflict  # uv's own reason
    missing = runner._unresolvable({"train": env(pkg("calc", "1.1"), pkg("aux-a", "2.0"))})
    assert missing == "step train: would also need extra 1.0"
    assert runner._unresolvable({"train": env(pkg("calc", "1.1"), pkg("aux-a", "2.0"), pkg("extra", "1.0"))}) == ""
    assert runner._unresolvable(old) == ""  # the recorded env is never asked about


GOOD = {"outcome": "ran", "run": "F/2", "seconds": 3.5, "detail": "", "differing": ["train.model"], "steps": ["train"]}


@pytest.mark.parametrize(
    "bad",
    [
        "not json",
        "[]",
        json.dumps({**GOOD, "outcome": "flips"}),
        json.dumps({**GOOD, "seconds": "3"}),
        json.dumps({**GOOD, "detail": 1}),
        json.dumps({**GOOD, "differing": ["model"]}),
        json.dumps({**GOOD, "steps": ["../x"]}),
        json.dumps({k: v for k, v in GOOD.items() if k != "steps"}),
    ],
)
def test_a_kept_answer_is_checked_and_anything_else_is_no_answer(tmp_path, bad):
    path = tmp_path / "a.json"
    path.write_text(bad)
    assert _cached(path) is None
    path.write_text(json.dumps(GOOD))
    assert _cached(path) == _Answer("ran", "F/2", 3.5, "", ("train.model",), ("train",))
    assert _cached(tmp_path / "missing.json") is None


def test_the_new_environments_of_a_lock_file_must_cover_every_step(tmp_path):
    record = make_record()  # steps start and end, both in env "e"*64
    record.envs["e" * 64] = env(pkg("calc", "1.0"))
    local = plats.local_platform_name()
    new = env(pkg("calc", "1.1"))

    def step(name, platforms):
        return StepLock(name, "pypi", "pypi", "3.11", (("calc", "1.1"),), (), (), False, platforms)

    path = tmp_path / "flow.repro.lock"
    with pytest.raises(BadInput, match="no such lock file"):
        lock_envs(path, record)
    write_lock(Lock("F", "flow.py", {"start": step("start", {local: new}), "end": step("end", {})}), path)
    with pytest.raises(BadInput, match=f"step end of F/1 has no {local} environment there"):
        lock_envs(path, record)
    write_lock(Lock("F", "flow.py", {"start": step("start", {local: new}), "end": step("end", {local: new})}), path)
    assert lock_envs(path, record) == {"start": new, "end": new}


def test_the_summary_names_each_artifact_where_it_first_differs():
    calc = PackageChange("calc", pkg("calc", "1.0"), pkg("calc", "1.1"), ("train",))
    aux = PackageChange("aux", pkg("aux", "1.0"), pkg("aux", "2.0"), ("train",))
    search = Search(changes=(aux, calc), culprits=(aux, calc))
    tried = [Tried((aux, calc), Outcome.FLIPS, "F/2", 4.0), Tried((calc,), Outcome.SAME, "F/3", 2.0, known=True)]
    result = BisectResult(make_record(), "new.lock", search, ("train.model", "end.model"), tried, 47.6)
    assert (
        result.summary() == "train.model differs because of aux 1.0 -> 2.0, calc 1.0 -> 1.1 (together; 1 reruns, 48 s)"
    )
    assert result.as_dict()["tried"][1] == {
        "changes": ["calc 1.0 -> 1.1"],
        "verdict": "same",
        "run": "F/3",
        "seconds": 2.0,
        "detail": "",
        "known": True,
        "steps": [],
    }
    none = BisectResult(make_record(), "new.lock", Search(changes=(calc,), reproduced=False), (), tried[:1], 5)
    assert none.summary() == "no artifact of F/1 differs with every change applied (1 package changes, 1 reruns, 5 s)"


def test_a_flow_that_fails_on_every_change_is_said_so_not_called_unchanged():
    calc = PackageChange("calc", pkg("calc", "1.0"), pkg("calc", "1.1"), ("train",))
    failed = Tried((calc,), Outcome.UNRESOLVABLE, "F/2", 3.0, "the run failed: ImportError: no module named calc")
    result = BisectResult(make_record(), "new.lock", Search(changes=(calc,), reproduced=False), (), [failed], 3.0)
    assert result.failed == "the run failed: ImportError: no module named calc"
    assert result.summary() == (
        "F/1 on the new environments: the run failed: ImportError: no module named calc; nothing to bisect"
    )


@pytest.mark.parametrize("given", [{}, {"lock_file": "a.lock", "against": "F/2"}, {"against": "F/2", "upgrade": True}])
def test_exactly_one_source_of_new_environments_is_taken(tmp_path, given):
    from metaflow_repro.operations.bisect import bisect

    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path)})
    with pytest.raises(BadInput, match="give one of --lock NEW_LOCK, --against REF2 or --upgrade"):
        bisect("F/1", f"file://{tmp_path / 'store'}", settings, **given)
    assert not (tmp_path / "store").exists()


def test_an_answer_in_the_store_is_read_as_untrusted_input(tmp_path):
    """A hybrid recorded by another machine is found through `bisect/<key>.json`: used only when the pointer
    names a run id, the run's record decodes and is that hybrid of the bisected run in the hybrid's
    environments; anything else is said and is no answer (the hybrid runs again)."""
    from dataclasses import replace

    from metaflow_repro.model.record import Hybrid
    from metaflow_repro.store import layout, open_store
    from tests.unit.model.test_record import ENV
    from tests.unit.model.test_record import make_record as full_record

    key = "ab" * 32
    store = open_store(f"file://{tmp_path / 'store'}")
    original = full_record()
    hybrid = replace(
        full_record(),
        run_id="2",
        replay_of=original.ref,
        duration_s=4.5,
        hybrid=Hybrid(key, ("calc 1.0 -> 1.1",), ("start.x",), ("start",)),
    )
    folder = layout.flow_dir(original.flow, original.identity)
    store.put_bytes(layout.record(folder, "2"), hybrid.to_json().encode())
    store.put_bytes(
        layout.record(folder, "3"), replace(hybrid, run_id="3", hybrid=Hybrid("cd" * 32)).to_json().encode()
    )
    said: list[str] = []
    settings = load_settings(tmp_path, environ={"REPRO_HOME": str(tmp_path / "home")})
    runner = _Runner(lambda: pytest.fail("nothing runs"), original, store, settings, {"start": ENV}, said.append)
    assert runner._stored(key, {"start": ENV}) is None and said == []  # no pointer: nothing known
    pointer = layout.bisect_answer(key)
    store.put_bytes(pointer, b'{"run": "2"}')
    assert runner._stored(key, {"start": ENV}) == _Answer("ran", "MyFlow/2", 4.5, "", ("start.x",), ("start",))
    other_env = {"start": env(pkg("calc", "1.1"))}
    for bad in (
        b"not json",
        b"\xff",
        b"[]",
        b'{"run": "../2"}',
        b'{"run": "2\\n"}',
        b"[" * 4000,  # deep, within the size bound: never a RecursionError
        b'{"run": "2", "x": 1}',
        b'{"run": "9"}',
        b'{"run": "3"}',
    ):
        store.put_bytes(pointer, bad)
        assert runner._stored(key, {"start": ENV}) is None, bad
    store.put_bytes(pointer, b'{"run": "2"}')
    assert runner._stored(key, other_env) is None
    store.put_bytes(pointer, b'{"run": "2"}' + b" " * 5000)  # bounded: a pointer names one run id
    assert runner._stored(key, {"start": ENV}) is None
    assert len(said) == 11 and all(f"/{pointer} gives no usable answer (" in line for line in said), said
    assert "is a hybrid of another bisection" in said[8] and "did not run in the hybrid's environments" in said[9]
