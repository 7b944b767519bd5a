"""`repro bisect` for real (issue 25 item 2): a local package index the test writes (`calc` 1.0 and 1.1,
whose `round_half()` rounds 2.5 differently, and `aux-a`, `aux-b`, which change version too but
change no result), a recorded run on the old versions and a lock of the new ones. Bisection must
name `calc` alone. The search itself (one culprit among 40, a pair found whole, unresolvable
subsets) is tested on the pure core: tests/unit/checks/test_bisect.py."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest

from tests.helpers import cli, make_wheel, screenshot, write_flow

pytestmark = pytest.mark.slow

FLOW = """
    from metaflow import FlowSpec, step, pypi

    class CalcFlow(FlowSpec):
        @step
        def start(self):
            self.x = 2.5
            self.next(self.train)

        @pypi(packages={{"calc": "{calc}", "aux-a": "{aux}"}})
        @step
        def train(self):
            import aux_a, calc
            self.model = calc.round_half(self.x)
            self.helper = aux_a.NAME
            self.next(self.end)

        @pypi(packages={{"aux-b": "{aux}"}})
        @step
        def end(self):
            import aux_b
            self.helper = aux_b.NAME

    if __name__ == "__main__":
        CalcFlow()
"""


@pytest.fixture(scope="module")
def recorded(base_wheels, tmp_path_factory) -> dict:
    """A local index holding calc, aux-a and aux-b in two versions each, a run on the old ones recorded in
    a file store, and a lock of the new ones: one real run, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("bisect")
    links, empty = tmp / "links", tmp / "empty-index"
    shutil.copytree(base_wheels, links)
    empty.mkdir()
    make_wheel(links, "calc", "1.0", body="import math\ndef round_half(x):\n    return math.floor(x + 0.5)\n")
    make_wheel(links, "calc", "1.1", body="def round_half(x):\n    return round(x)\n")  # banker's rounding
    for name in ("aux-a", "aux-b"):
        for version in ("1.0", "2.0"):  # aux-a needs `helper`, at any version (for --upgrade)
            make_wheel(links, name, version, body=f"NAME = {name!r}\n", requires=("helper",) if name == "aux-a" else ())
    make_wheel(links, "helper", "1.0")
    env = {
        "REPRO_FIND_LINKS": str(links),
        "REPRO_INDEX_URL": empty.as_uri(),
        "METAFLOW_DEFAULT_DATASTORE": "local",
        "METAFLOW_DEFAULT_METADATA": "local",
    }
    store = f"file://{tmp / 'store'}"
    old = write_flow(tmp / "old", FLOW.format(calc="1.0", aux="1.0"))
    ran = cli("run", old, "--store", store, cwd=old.parent, env=env)
    assert ran.code == 0, ran.text[-3000:]
    new = write_flow(tmp / "new", FLOW.format(calc="1.1", aux="2.0"))
    locked = cli("lock", new, cwd=new.parent, env=env)
    assert locked.code == 0, locked.text[-3000:]
    (latest,) = (tmp / "store" / "runs").glob("*/latest")
    old_ref = f"CalcFlow/{latest.read_text().strip()}"
    return {
        "env": env,
        "store": store,
        "new_lock": new.with_name("flow.repro.lock"),
        "links": links,
        "new": new,
        "ref": old_ref,
        "store_dir": tmp / "store",
    }


def test_bisect_names_the_one_package_that_changes_the_artifact(recorded, tmp_path):
    env, store = recorded["env"], recorded["store"]
    r = cli("bisect", "CalcFlow/latest", "--lock", recorded["new_lock"], "--store", store, "--json", env=env)
    assert r.code == 1, r.text[-4000:]
    found = json.loads(r.out)
    assert found["targets"] == ["train.model", "end.model"], found  # `end` passes `model` on
    assert [c["package"] for c in found["changes"]] == ["aux-a", "aux-b", "calc"]
    assert found["culprits"] == [{"package": "calc", "old": "1.0", "new": "1.1", "steps": ["train"]}]
    assert found["summary"].startswith("train.model differs because of calc 1.0 -> 1.1 (alone; ")
    verdicts = [(t["changes"], t["verdict"]) for t in found["tried"]]
    assert verdicts[0] == (["aux-a 1.0 -> 2.0", "aux-b 1.0 -> 2.0", "calc 1.0 -> 1.1"], "flips")
    assert (["aux-a 1.0 -> 2.0", "aux-b 1.0 -> 2.0"], "same") in verdicts, verdicts
    assert (["calc 1.0 -> 1.1"], "flips") in verdicts, verdicts
    assert found["reruns"] == len(found["tried"]) == 3, found
    # the first hybrid runs whole; the others resume it from `train` (Metaflow clones `start`)
    steps = [t["steps"] for t in found["tried"]]
    assert steps == [["start", "train", "end"], ["train", "end"], ["train", "end"]], r.err[-6000:]

    _hybrids_are_recorded(recorded, found)

    # every answer is kept, as a recorded run in the store: the same bisection again, with nothing kept in
    # REPRO_HOME/bisect, runs nothing, prints every hybrid as text, and writes the HTML page (--html)
    shutil.rmtree(Path(os.environ["REPRO_HOME"]) / "bisect")
    page = tmp_path / "bisect.html"
    again = cli("bisect", "CalcFlow/latest", "--lock", recorded["new_lock"], "--store", store, "--html", page, env=env)
    assert again.code == 1, again.text[-4000:]
    lines = again.out.splitlines()
    assert lines[-1].startswith("train.model differs because of calc 1.0 -> 1.1 (alone; 0 reruns, "), again.text
    assert lines[0].startswith("[1] flips        aux-a 1.0 -> 2.0; aux-b 1.0 -> 2.0; calc 1.0 -> 1.1: train.model")
    assert len(lines) == 4 and all("(known)" in line for line in lines[:3]), again.out
    assert [line.rsplit(" (", 1)[1].rstrip(")") for line in lines[:3]] == [t["run"] for t in found["tried"]], again.out
    assert len(list((Path(os.environ["REPRO_HOME"]) / "bisect").glob("*.json"))) == 3  # kept here again
    html = page.read_text()
    assert "train.model differs because of calc 1.0 -&gt; 1.1 (alone; 0 reruns, " in html
    assert '<tr class="culprit"><td><code>calc</code> <span class="badge different">culprit</span>' in html
    assert re.findall(r'<td class="\w+">(\w+) \(known\)</td>', html) == ["flips", "same", "flips"], html
    assert "<script" not in html and 'src="' not in html
    assert [p.name for p in tmp_path.iterdir()] == ["bisect.html"]  # written to a temporary name, renamed
    _screenshot(page, tmp_path)


def _hybrids_are_recorded(recorded, found):
    """Each hybrid that ran is a run record in the store: a replay of the bisected run (so `latest` stays
    on it) marked with its changes, the artifacts that differed and the steps it ran, and `bisect/<key>.json`
    names it; `repro store show` shows it as such, and `repro store verify` finds every object it names."""
    store = recorded["store_dir"]
    original = recorded["ref"].split("/")[1]
    records = [json.loads(p.read_text()) for p in store.glob("runs/*/*/record.json")]
    hybrids = {f"CalcFlow/{r['run_id']}": r for r in records if "hybrid" in r}
    assert sorted(hybrids) == sorted(t["run"] for t in found["tried"]), found
    for t in found["tried"]:
        mark = hybrids[t["run"]]["hybrid"]
        assert hybrids[t["run"]]["replay_of"] == recorded["ref"]
        assert (mark["changes"], mark["steps"]) == (t["changes"], t["steps"]), mark
        assert mark["differing"] == (["train.model", "end.model"] if t["verdict"] == "flips" else []), mark
    assert [r["run_id"] for r in records if "hybrid" not in r] == [original]  # the recorded run alone
    (latest,) = store.glob("runs/*/latest")
    assert latest.read_text().strip() == original  # a hybrid is never its flow's baseline
    pointers = {json.loads(p.read_text())["run"] for p in store.glob("bisect/*.json")}
    assert pointers == {r.split("/")[1] for r in hybrids}, pointers
    calc = next(t["run"] for t in found["tried"] if t["changes"] == ["calc 1.0 -> 1.1"])
    shown = cli("store", "show", calc, "--store", recorded["store"], env=recorded["env"])
    assert shown.code == 0, shown.text[-2000:]
    assert f"replay of {recorded['ref']}" in shown.out, shown.out
    assert "bisection hybrid: calc 1.0 -> 1.1; train.model, end.model differ(s)" in shown.out, shown.out
    verified = cli("store", "verify", calc, "--store", recorded["store"], env=recorded["env"])
    assert verified.code == 0, verified.text[-2000:]  # every object it names is there: it replays like any run


def _screenshot(page, tmp_path):
    """The page in a real browser (headless Chromium, as the audit page): the red verdict line is drawn."""
    image = screenshot(page, tmp_path / "shots" / "bisect.png", tmp_path / "shots" / "profile")
    pixels = [image.getpixel((x, y)) for y in range(60, 130) for x in range(0, 1400, 2)]
    assert sum(1 for p in pixels if p == (207, 34, 46)) > 2000  # the verdict line, on the report's red


def test_replay_from_a_step_reuses_the_recorded_tasks_before_it(recorded):
    """Item 4: `repro replay REF --from-step train` clones `start` from the recorded datastore (Metaflow's
    resume) and re-runs `train` and `end`; the cloned task's artifacts are judged with the others."""
    r = cli("replay", recorded["ref"], "--from-step", "train", "--store", recorded["store"], env=recorded["env"])
    assert r.code == 0, r.text[-4000:]
    assert "replaying CalcFlow/" in r.err and "from train: the tasks of start are reused" in r.err, r.text[-4000:]
    assert re.search(r"/start/1\] Cloning previously run task \d+/start/1", r.out), r.text[-4000:]
    assert not re.search(r"/start/1 \(pid \d+\)\] Task is starting", r.out), r.text[-4000:]  # never run again
    assert re.search(r"/train/\d+ \(pid \d+\)\] Task is starting", r.out), r.text[-4000:]
    assert r.out.splitlines()[-1] == "result: identical", r.out
    bad = cli("replay", recorded["ref"], "--from-step", "fit", "--store", recorded["store"], env=recorded["env"])
    assert bad.code == 2 and "has no step fit (its steps: start, train, end)" in bad.err, bad.text[-2000:]


def test_bisect_upgrade_resolves_the_recorded_declarations_again(recorded):
    """--upgrade: the recorded code's declarations resolved today, where the index now has helper 2.0 (a
    dependency aux-a leaves unpinned). The one change is run, and changes no artifact: exit 0, no culprit."""
    make_wheel(recorded["links"], "helper", "2.0")
    r = cli("bisect", recorded["ref"], "--upgrade", "--store", recorded["store"], "--json", env=recorded["env"])
    assert r.code == 0, r.text[-4000:]
    found = json.loads(r.out)
    assert [(c["package"], c["old"], c["new"]) for c in found["changes"]] == [("helper", "1.0", "2.0")], found
    assert not found["reproduced"] and found["culprits"] == [] and found["reruns"] == 1, found
    assert found["summary"].startswith("no artifact of CalcFlow/"), found


def test_bisect_against_another_run_takes_its_environments_and_the_kept_answers(recorded):
    """--against REF2: the new environments are those a recorded run of the new lock ran in, the same
    hybrids as --lock's, so every answer is one the first bisection kept: nothing runs again."""
    env, store = recorded["env"], recorded["store"]
    ran = cli("run", recorded["new"], "--store", store, cwd=recorded["new"].parent, env=env)
    assert ran.code == 0, ran.text[-3000:]
    r = cli("bisect", recorded["ref"], "--against", "CalcFlow/latest", "--store", store, "--json", env=env)
    assert r.code == 1, r.text[-4000:]
    found = json.loads(r.out)
    assert found["culprits"] == [{"package": "calc", "old": "1.0", "new": "1.1", "steps": ["train"]}], found
    assert found["reruns"] == 0 and all(t["known"] for t in found["tried"]), found
