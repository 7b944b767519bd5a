"""Input lineage, the pure part on the host: the tasks' reports of what they read from other runs
become the record's ``inputs`` (one entry per run read, the steps that read it, how it was chosen,
the artifacts read with the sizes of the bytes copied, the others only listed)."""

import json

import pytest

from metaflow_extensions.repro.plugins import protocol as p
from metaflow_repro.adapter.lineage import collect
from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.model.record import InputArtifact, InputVia, UpstreamTask

SHA_A, SHA_B, SHA_C = "a" * 40, "b" * 40, "c" * 40


def art(sha1):
    return {p.IN_SHA1: sha1, p.IN_SIZE: 0}


def run_read(run_id="7", via=p.VIA_PATHSPEC, tasks=None, **more):
    return {
        p.IN_FLOW: "Up",
        p.IN_RUN_ID: run_id,
        p.IN_VIA: via,
        p.IN_DATASTORE: {p.IN_DS_TYPE: "local", p.IN_DS_ROOT: "/somewhere"},
        p.IN_TASKS: tasks or {},
        **more,
    }


def task(*reports):
    """A task as ``inspect_run`` reads it back: its metadata holds the lineage report, as JSON."""
    merged = {}
    for report in reports:
        merged.update(report)
    return {"metadata": {p.META_INPUTS: json.dumps(merged)}}


def test_tasks_that_read_nothing_give_no_inputs():
    assert collect({"start": [{}, {"metadata": {}}, {"metadata": {p.META_INPUTS: ""}}]}, {}, "run F/1") == {}


def test_a_run_read_is_named_with_the_steps_that_read_it_and_without_its_datastore():
    first = run_read(tasks={"end/3": {p.IN_ATTEMPT: 1, p.IN_TS_EPOCH: 5, p.IN_ARTIFACTS: {"x": art(SHA_A)}}})
    steps = {"start": [task({"Up/7": first})], "train": [task({"Up/7": first}), task({"Up/7": first})]}
    (ref, run), *rest = collect(steps, {SHA_A: 12}, "run F/1").items()
    assert not rest and ref == "Up/7" and (run.flow, run.run_id) == ("Up", "7")
    assert run.read_by == ("start", "train") and run.via is InputVia.PATHSPEC
    assert run.tasks == {"end/3": UpstreamTask(attempt=1, ts_epoch=5, artifacts={"x": InputArtifact(SHA_A, 12)})}


def test_artifacts_read_by_any_task_are_merged_with_the_sizes_copied_and_no_longer_listed_as_others():
    one = run_read(
        tasks={"end/3": {p.IN_ARTIFACTS: {"x": art(SHA_A)}, p.IN_OTHERS: {"y": art(SHA_B), "z": art(SHA_C)}}}
    )
    two = run_read(tasks={"end/3": {p.IN_ARTIFACTS: {"y": art(SHA_B)}, p.IN_OTHERS: {"x": art(SHA_A)}}})
    run = collect({"a": [task({"Up/7": one})], "b": [task({"Up/7": two})]}, {SHA_A: 4}, "run F/1")["Up/7"]
    assert run.tasks["end/3"].artifacts == {"x": InputArtifact(SHA_A, 4), "y": InputArtifact(SHA_B, 0)}
    assert run.tasks["end/3"].others == {"z": InputArtifact(SHA_C, 0)}


def test_the_first_report_of_a_run_and_of_a_task_gives_their_times():
    one = run_read(ts_epoch=1, tasks={"end/3": {p.IN_TS_EPOCH: 10}})
    two = run_read(ts_epoch=2, tasks={"end/3": {p.IN_TS_EPOCH: 20}, "start/2": {p.IN_TS_EPOCH: 30}})
    run = collect({"a": [task({"Up/7": one})], "b": [task({"Up/7": two})]}, {}, "run F/1")["Up/7"]
    assert run.ts_epoch == 1 and run.tasks["end/3"].ts_epoch == 10 and run.tasks["start/2"].ts_epoch == 30


@pytest.mark.parametrize(
    "vias,want",
    [
        ((p.VIA_PATHSPEC,), InputVia.PATHSPEC),
        ((p.VIA_PATHSPEC, p.VIA_LATEST), InputVia.LATEST),
        ((p.VIA_LATEST, p.VIA_PATHSPEC), InputVia.LATEST),
        ((p.VIA_PATHSPEC, p.VIA_LATEST_SUCCESSFUL), InputVia.LATEST_SUCCESSFUL),
        ((p.VIA_LATEST_SUCCESSFUL, p.VIA_LATEST), InputVia.LATEST_SUCCESSFUL),
        ((p.VIA_LATEST, p.VIA_LATEST_SUCCESSFUL, p.VIA_PATHSPEC), InputVia.LATEST_SUCCESSFUL),
    ],
)
def test_a_run_any_step_chose_as_the_latest_is_recorded_as_chosen_that_way(vias, want):
    """``latest_successful_run`` beats ``latest_run``, which beats a pathspec (a replay must find the
    run again the way the strongest reader found it)."""
    steps = {f"s{i}": [task({"Up/7": run_read(via=via)})] for i, via in enumerate(vias)}
    assert collect(steps, {}, "run F/1")["Up/7"].via is want


def test_two_runs_read_in_one_task_are_two_inputs():
    got = collect({"start": [task({"Up/7": run_read("7"), "Up/8": run_read("8")})]}, {}, "run F/1")
    assert list(got) == ["Up/7", "Up/8"] and got["Up/8"].read_by == ("start",)


def test_an_entry_that_is_not_a_table_is_left_out():
    assert list(collect({"start": [task({"Up/7": run_read(), "Up/8": ["junk"]})]}, {}, "run F/1")) == ["Up/7"]


def test_an_unreadable_report_names_the_run_and_the_step():
    with pytest.raises(InfraError, match=r"^run F/1: step start reported unreadable input lineage$"):
        collect({"start": [{"metadata": {p.META_INPUTS: "{not json"}}]}, {}, "run F/1")


def test_a_report_that_is_not_a_table_is_refused_with_its_field_path():
    with pytest.raises(BadInput, match=rf"run F/1.*start\.{p.META_INPUTS}"):
        collect({"start": [{"metadata": {p.META_INPUTS: "[1, 2]"}}]}, {}, "run F/1")


def test_a_report_is_checked_like_a_stored_record():
    with pytest.raises(BadInput, match=r"run F/1.*inputs"):
        collect({"start": [task({"Up/7": run_read(run_id="8")})]}, {}, "run F/1")


def test_an_upstream_runs_end_step_is_the_one_whose_success_was_read():
    """Metaflow's client tells a run succeeded by its end task's `_success`: the step that read it names
    the end step a replay's datastore gives the run (its `_parameters` metadata), whatever its name."""
    from metaflow_repro.adapter.lineage import end_step_read
    from metaflow_repro.model.record import UpstreamRun

    def upstream(**tasks):
        return UpstreamRun(
            "TrainFlow",
            "7",
            ("fetch",),
            tasks={
                key: UpstreamTask(artifacts={n: InputArtifact(sha1="1" * 40, size=1) for n in names})
                for key, names in tasks.items()
            },
        )

    assert end_step_read(upstream(**{"load/1": ["numbers"], "publish/2": ["_success", "label"]})) == "publish"
    assert end_step_read(upstream(**{"load/1": ["numbers"]})) is None  # read by pathspec: nothing tells
    assert end_step_read(upstream(**{"a/1": ["_success"], "b/2": ["_success"]})) is None  # no guess
