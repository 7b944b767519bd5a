"""Comparing two runs, the pure part: which artifacts are identical, missing or different, in
which order, and what a comparison counts (no environment is started: differing bytes are only
described when no interpreter or blob is there to compare them semantically)."""

import pytest

from metaflow_repro.checks.compare import ArtifactResult, Comparison, compare
from tests.helpers import make_record

A1, A2, B1 = "a" * 40, "ab" + "c" * 38, "b" * 40


def cmp(a, b, blobs_a=lambda s: None, blobs_b=lambda s: None, pythons=None):
    return compare(a, b, blobs_a, blobs_b, pythons or {})


def test_identical_runs_are_the_same_and_internal_artifacts_are_skipped():
    tasks = {
        "start": {
            "-": {
                "x": (A1, 1, "int"),
                "_model": (B1, 2, "M"),
                "_foreach_stack": (A2, 3, "list"),
                "__hidden": (A2, 3, "x"),
            }
        },
        "end": {"-": {}},
    }
    c = cmp(make_record("1", tasks), make_record("2", tasks))
    assert c.a == "F/1" and c.b == "F/2"
    assert c.results == (
        ArtifactResult("start", "-", "_model", "identical"),
        ArtifactResult("start", "-", "x", "identical"),
    )
    assert c.same and c.count("identical") == 2 and c.count("different") == 0 and c.count("equivalent") == 0
    assert c.by_step() == {"start": {"identical": 2, "equivalent": 0, "different": 0}}


def test_steps_tasks_and_artifacts_on_one_side_only_are_differences():
    a = make_record(
        "1",
        {
            "start": {"-": {"x": (A1, 1, "int"), "gone": (A1, 1, "int")}},
            "only_a": {"-": {}},
            "fan": {"0": {}, "1": {}},
            "end": {"-": {}},
        },
    )
    b = make_record(
        "2",
        {
            "start": {"-": {"x": (A1, 1, "int"), "new": (B1, 1, "int")}},
            "fan": {"0": {}, "2": {}},
            "end": {"-": {}},
            "only_b": {"-": {}},
        },
    )
    c = cmp(a, b)
    assert [(r.step, r.task, r.name, r.verdict, r.detail) for r in c.results] == [
        ("start", "-", "gone", "different", "only in F/1"),
        ("start", "-", "new", "different", "only in F/2"),
        ("start", "-", "x", "identical", ""),
        ("only_a", "*", "*", "different", "step only_a did not run in F/2"),
        ("fan", "1", "*", "different", "task 1 exists only in F/1"),
        ("fan", "2", "*", "different", "task 2 exists only in F/2"),
        ("only_b", "*", "*", "different", "step only_b did not run in F/1"),
    ]
    assert not c.same and c.count("different") == 6
    assert c.by_step()["fan"] == {"identical": 0, "equivalent": 0, "different": 2}
    assert list(c.by_step()) == ["start", "only_a", "fan", "only_b"]


def test_differing_bytes_without_an_environment_are_described_not_compared():
    a = make_record("1", {"start": {"-": {"x": (A1, 10, "int"), "y": (A1, 10, "")}}})
    b = make_record("2", {"start": {"-": {"x": (B1, 12, "float"), "y": (B1, 11, "")}}})
    c = cmp(a, b)
    assert [(r.name, r.verdict, r.detail) for r in c.results] == [
        (
            "x",
            "different",
            f"sha1 {A1[:10]} -> {B1[:10]}, int 10 -> 12 bytes (environment eeeeeeeeeeee not built "
            "here: no semantic comparison)",
        ),
        (
            "y",
            "different",
            f"sha1 {A1[:10]} -> {B1[:10]}, ? 10 -> 11 bytes (environment eeeeeeeeeeee not built "
            "here: no semantic comparison)",
        ),
    ]
    # the interpreter is there but a blob is not
    c = cmp(a, b, blobs_a=lambda s: None, pythons={"e" * 64: "/no/python"})
    assert c.results[0].detail.endswith("(blob not available: no semantic comparison)")


def test_the_readers_env_is_the_second_runs_when_it_is_built_else_the_firsts():
    a = make_record("1", {"start": {"-": {"x": (A1, 1, "int")}}}, env="1" * 64)
    b = make_record("2", {"start": {"-": {"x": (B1, 1, "int")}}}, env="2" * 64)
    assert "blob not available" in cmp(a, b, pythons={"2" * 64: "/py"}).results[0].detail
    assert "blob not available" in cmp(a, b, pythons={"1" * 64: "/py"}).results[0].detail
    assert "environment 111111111111 not built here" in cmp(a, b, pythons={"3" * 64: "/py"}).results[0].detail


def test_a_blob_that_does_not_match_its_sha1_is_never_compared():
    a = make_record("1", {"start": {"-": {"x": (A1, 1, "int")}}})
    b = make_record("2", {"start": {"-": {"x": (B1, 1, "int")}}})
    c = cmp(a, b, blobs_a=lambda s: b"tampered", blobs_b=lambda s: b"tampered", pythons={"e" * 64: "/py"})
    (r,) = c.results
    assert r.verdict == "different" and "F/1 start/-.x" in r.detail and "does not match its recorded sha1" in r.detail


@pytest.mark.parametrize(
    "verdicts,same",
    [((), True), (("identical", "equivalent"), True), (("identical", "different"), False), (("different",), False)],
)
def test_same_means_nothing_different(verdicts, same):
    c = Comparison("F/1", "F/2", tuple(ArtifactResult("s", "-", f"n{i}", v) for i, v in enumerate(verdicts)))
    assert c.same is same
    assert sum(c.count(v) for v in ("identical", "equivalent", "different")) == len(verdicts)
    assert c.count("equivalent") == verdicts.count("equivalent")


def test_semantic_comparison_in_an_interpreter_uses_the_tolerances():
    """Differing bytes are compared by value in the reader's interpreter (here: the running one,
    which has the built-in comparators): within rel_tol 1e-9 and abs_tol 0 by default."""
    import hashlib
    import pickle
    import sys

    values = {"close": (1.0, 1.0 + 1e-12), "far": (1.0, 1.1), "tiny": (0.0, 1e-300)}
    blobs, ta, tb = {}, {}, {}
    for name, (x, y) in values.items():
        for side, v in (("a", x), ("b", y)):
            data = pickle.dumps(v, protocol=4)
            sha = hashlib.sha1(data).hexdigest()
            blobs[sha] = data
            (ta if side == "a" else tb)[name] = (sha, len(data), "float")
    a, b = make_record("1", {"start": {"-": ta}}), make_record("2", {"start": {"-": tb}})
    pythons = {"e" * 64: sys.executable}
    c = compare(a, b, blobs.get, blobs.get, pythons, sys_path=[])
    assert {r.name: r.verdict for r in c.results} == {"close": "equivalent", "far": "different", "tiny": "different"}
    assert c.same is False
    loose = compare(a, b, blobs.get, blobs.get, pythons, options={"rel_tol": 0.2})
    assert {r.name: r.verdict for r in loose.results} == {
        "close": "equivalent",
        "far": "equivalent",
        "tiny": "different",
    }
    absolute = compare(a, b, blobs.get, blobs.get, pythons, options={"abs_tol": 1e-3})
    assert {r.name: r.verdict for r in absolute.results}["tiny"] == "equivalent"


def test_a_tampered_blob_of_the_second_run_names_the_second_run():
    a = make_record("1", {"start": {"-": {"x": (A1, 1, "int")}}})
    b = make_record("2", {"start": {"-": {"x": (B1, 1, "int")}}})
    import hashlib

    good = b"\x80\x04K\x01."
    a = make_record("1", {"start": {"-": {"x": (hashlib.sha1(good).hexdigest(), 5, "int")}}})
    c = cmp(a, b, blobs_a=lambda s: good, blobs_b=lambda s: b"tampered", pythons={"e" * 64: "/py"})
    (r,) = c.results
    assert (
        r.verdict == "different"
        and r.detail.startswith("F/2 start/-.x")
        and "does not match its recorded sha1" in r.detail
    )


def test_include_files_are_compared_by_their_contents_not_by_their_descriptor_artifacts():
    """An IncludeFile artifact names the run's own datastore, so it always differs between runs:
    the file's sha256 decides, and the artifact of that name is not compared again."""
    from dataclasses import replace

    from metaflow_repro.model.record import IncludedFileRecord

    def with_files(run_id, files):
        arts = {name: (run_id * 40, 9, "str") for name in ("same", "edited", "only_a", "only_b")}
        record = make_record(run_id, {"start": {"-": {**arts, "z": (A1, 1, "int")}}})
        return replace(record, include_files={n: IncludedFileRecord(sha, size, n) for n, (sha, size) in files.items()})

    a = with_files("1", {"same": ("s" * 64, 3), "edited": ("e" * 64, 3), "only_a": ("a" * 64, 1)})
    b = with_files("2", {"same": ("s" * 64, 3), "edited": ("f" * 64, 4), "only_b": ("b" * 64, 1)})
    c = cmp(a, b)
    assert [(r.step, r.task, r.name, r.verdict, r.detail) for r in c.results] == [
        ("start", "-", "edited", "different", f"IncludeFile contents: sha256 {'e' * 10} -> {'f' * 10}, 3 -> 4 bytes"),
        ("start", "-", "only_a", "different", "IncludeFile contents: only in F/1"),
        ("start", "-", "only_b", "different", "IncludeFile contents: only in F/2"),
        ("start", "-", "same", "identical", ""),
        ("start", "-", "z", "identical", ""),
    ]


def test_include_files_are_results_of_the_flows_own_start_step():
    """A flow whose start step is `@step(start=True) def begin`: its IncludeFile contents are compared as
    results of `begin`, the first step of the record's graph order (issue 26 item 2)."""
    from dataclasses import replace

    from metaflow_repro.model.record import IncludedFileRecord

    def run(run_id, sha):
        record = make_record(run_id, {"begin": {"-": {}}, "finish": {"-": {}}})
        return replace(record, include_files={"notes": IncludedFileRecord(sha * 64, 3, "notes.txt")})

    assert [(r.step, r.name, r.verdict) for r in cmp(run("1", "a"), run("2", "a")).results] == [
        ("begin", "notes", "identical")
    ]
    assert [(r.step, r.name, r.verdict) for r in cmp(run("1", "a"), run("2", "b")).results] == [
        ("begin", "notes", "different")
    ]


def _catching(run_id, caught, sha=A1, later_sha=None):
    """A run whose `compute` step's exception @catch handled (``caught``; None: it raised nothing), kept
    in ``failed`` with the pickle ``sha`` (a traceback: other bytes in every run), carried on to `end`."""
    from dataclasses import replace

    tasks = {
        "start": {"-": {"x": ("d" * 40, 1, "int")}},
        "compute": {
            "-": {"_catch_exception": (sha, 9, "E"), "failed": (sha, 9, "E")}
            if caught
            else {"failed": (A2, 4, "NoneType")}
        },
        "end": {"-": {"failed": (later_sha or sha, 9, "E")} if caught else {"failed": (A2, 4, "NoneType")}},
    }
    record = make_record(run_id, tasks)
    compute = record.steps["compute"]
    task = replace(compute.tasks["-"], caught=caught)
    return replace(record, steps={**record.steps, "compute": replace(compute, tasks={"-": task})})


def test_a_caught_exception_is_compared_by_its_type_not_its_traceback():
    """Issue 26 item 1: the pickle @catch keeps holds a traceback with the run's paths, so its bytes differ
    in every replay: the same type caught in the same task is identical; none, or another type, differs."""
    from metaflow_repro.model.record import Caught

    value_error = Caught("builtins.ValueError", "x is odd", "failed")
    original = _catching("1", value_error, sha=A1)
    same = cmp(original, _catching("2", Caught("builtins.ValueError", "x is odd", "failed"), sha=B1))
    assert same.same and same.verdict == "identical", same.results
    assert ArtifactResult("compute", "-", "failed", "identical") in same.results
    assert ArtifactResult("end", "-", "failed", "identical") in same.results  # carried on, compared alike
    none = cmp(original, _catching("3", None))
    assert not none.same
    detail = "@catch caught ValueError (x is odd) in F/1; in F/3 the step raised none"
    assert ArtifactResult("compute", "-", "failed", "different", detail) in none.results
    assert ArtifactResult("compute", "-", "_catch_exception", "different", detail) in none.results
    other = cmp(original, _catching("4", Caught("builtins.KeyError", "'x'", "failed"), sha=B1))
    assert (
        ArtifactResult("compute", "-", "failed", "different", "@catch caught ValueError in F/1, KeyError in F/4 ('x')")
        in other.results
    )


def test_a_step_a_switch_took_in_one_run_only_is_different_and_says_which_branch_the_other_took():
    from dataclasses import replace

    graph = {"start": ("route",), "route": ("a", "b"), "a": ("end",), "b": ("end",), "end": ()}
    took_a = replace(
        make_record("1", {"start": {"-": {}}, "route": {"-": {}}, "a": {"-": {}}, "b": {}, "end": {"-": {}}}),
        graph=graph,
    )
    took_b = replace(
        make_record("2", {"start": {"-": {}}, "route": {"-": {}}, "a": {}, "b": {"-": {}}, "end": {"-": {}}}),
        graph=graph,
    )
    assert cmp(took_a, took_a).same
    c = cmp(took_a, took_b)
    assert (
        ArtifactResult("a", "*", "*", "different", "step a ran in F/1 but not in F/2: the switch in route took b there")
        in c.results
    )
    assert (
        ArtifactResult("b", "*", "*", "different", "step b ran in F/2 but not in F/1: the switch in route took a there")
        in c.results
    )
    # a run that failed before the switch: not put down to it, its tasks are compared one by one
    failed = replace(
        make_record("3", {"start": {"-": {}}, "route": {}, "a": {}, "b": {}, "end": {}}, status="failed"), graph=graph
    )
    assert ArtifactResult("a", "-", "*", "different", "task - exists only in F/1") in cmp(took_a, failed).results
