"""`repro audit` for real (issue 25 item 3): six recorded runs of three tiny flows that share one
environment (no packages), one of them non-reproducible on purpose (it keeps the clock), replayed two at
a time; a second audit after a file the flow reads changed exits 1; the HTML page in a real browser;
one run audited on the moto + Docker Batch world. The recorded runs and the first audit are shared."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from tests.helpers import cli, require_chromium, screenshot, write_flow

STABLE = """
from metaflow import FlowSpec, Parameter, step
class StableFlow(FlowSpec):
    n = Parameter("n", default=1)
    @step
    def start(self):
        self.square = self.n * self.n
        self.next(self.end)
    @step
    def end(self):
        pass
if __name__ == "__main__":
    StableFlow()
"""

OUTSIDE = """
from metaflow import FlowSpec, step
DATA = {data!r}  # a file outside the flow's folder: no snapshot holds it
class OutsideFlow(FlowSpec):
    @step
    def start(self):
        with open(DATA) as fh:
            self.text = fh.read()
        self.next(self.end)
    @step
    def end(self):
        pass
if __name__ == "__main__":
    OutsideFlow()
"""

CLOCK = """
import time
from metaflow import FlowSpec, step
class ClockFlow(FlowSpec):
    @step
    def start(self):
        self.stamp = time.time_ns()  # never the same twice: the run that cannot reproduce
        self.next(self.end)
    @step
    def end(self):
        pass
if __name__ == "__main__":
    ClockFlow()
"""

#: flow file -> the `repro run` arguments after `--` of each recorded run
RUNS = {
    "stable_flow.py": [("--n", "1"), ("--n", "2"), ("--n", "3")],
    "outside_flow.py": [(), ("--tag", "nightly")],
    "clock_flow.py": [()],
}


@pytest.fixture(scope="module")
def history(tmp_path_factory):
    """Six recorded runs in a file:// store, each flow's runs recorded in a thread of its own."""
    root = tmp_path_factory.mktemp("audit")
    data = root / "outside.txt"
    data.write_text("first\n")
    project = root / "proj"
    write_flow(project, STABLE, name="stable_flow.py")
    write_flow(project, OUTSIDE.format(data=str(data)), name="outside_flow.py")
    write_flow(project, CLOCK, name="clock_flow.py")
    store = (root / "store").as_uri()
    failures: list[str] = []

    def record(name: str) -> None:
        for args in RUNS[name]:
            r = cli("run", project / name, "--store", store, "--", *args, cwd=project)
            if r.code != 0:
                failures.append(r.text[-3000:])

    began = time.monotonic()
    threads = [threading.Thread(target=record, args=(name,)) for name in RUNS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not failures, failures
    print(f"recorded 6 runs in {time.monotonic() - began:.1f} s")
    return {"root": root, "project": project, "store": store, "data": data}


@pytest.fixture(scope="module")
def first_audit(history):
    html = history["root"] / "audit.html"
    r = cli("audit", "--store", history["store"], "-j", "2", "--json", "--html", html, cwd=history["project"])
    return r, html


def test_an_audit_of_six_runs_reports_exactly_the_one_that_does_not_reproduce(first_audit, history):
    r, _ = first_audit
    assert r.code == 0, r.text[-4000:]  # a first audit has nothing to regress from
    doc = json.loads(r.out)  # stdout is the audit alone: the replayed runs' output went to stderr
    assert len(doc["entries"]) == 6 and not doc["regressions"]
    flows = {e["flow"] for e in doc["entries"]}
    assert flows == {"StableFlow", "OutsideFlow", "ClockFlow"}
    bad = [e for e in doc["entries"] if e["verdict"] != "identical"]
    assert [e["flow"] for e in bad] == ["ClockFlow"], bad
    (clock,) = bad
    assert clock["verdict"] == "different"
    assert {d["artifact"] for d in clock["differences"]} == {"stamp"}  # made in start, passed on to end
    assert "start" in {d["step"] for d in clock["differences"]}
    assert clock["causes"] and "start" in clock["causes"][0]
    assert all(e["replay"] for e in doc["entries"])  # each replay's own record
    assert "6/6" in r.err  # the progress line
    keys = [p.name for p in (Path(history["root"]) / "store" / "audits").iterdir()]
    assert keys == [doc["key"].split("/")[-1]]


def test_a_second_audit_after_a_regression_exits_1_naming_the_runs(first_audit, history):
    history["data"].write_text("second\n")  # what OutsideFlow's runs read is not what they read when recorded
    r = cli("audit", "--store", history["store"], "--flow", "OutsideFlow", "-j", "2", cwd=history["project"])
    assert r.code == 1, r.text[-4000:]
    assert "REGRESSION: 2 run(s) that replayed identical in the previous audit no longer do" in r.out
    assert r.out.count(": different (was identical)") == 2
    assert "start/-.text: 'first\\n' != 'second\\n'" in r.out
    assert "StableFlow" not in r.out and "ClockFlow" not in r.out  # --flow chose the runs
    tagged = cli("audit", "--store", history["store"], "--tag", "nightly", "--json", cwd=history["project"])
    assert tagged.code == 0, tagged.text[-4000:]  # compared with the newest audit that replayed it: no change
    (entry,) = json.loads(tagged.out)["entries"]
    assert entry["flow"] == "OutsideFlow" and entry["verdict"] == "different" and entry["previous"] == "different"


def test_the_html_audit_renders_in_a_browser_with_the_timeline(first_audit, tmp_path):
    require_chromium()  # before anything else: skipped (failed under CI) without it
    _, html = first_audit
    page = html.read_text()
    assert "<script" not in page and 'src="' not in page and "<svg" in page
    image = screenshot(html, tmp_path / "audit.png", tmp_path / "profile")
    assert image.size == (1400, 900)
    pixels = [image.getpixel((x, y)) for y in range(150, 450) for x in range(0, 1400, 2)]
    green = sum(1 for p in pixels if p == (26, 127, 55))  # identical dots
    red = sum(1 for p in pixels if p == (207, 34, 46))  # the different one
    assert green > 100 and red > 30, (green, red)
    assert "ClockFlow" in page and "start/-.stamp" in page


@pytest.mark.slow
def test_an_audit_on_batch_replays_the_run_as_batch_jobs(batch_world, tmp_path, monkeypatch):
    """`repro audit --on batch`: the run replays on the moto + Docker Batch world, each step a job."""
    path = write_flow(tmp_path / "proj", STABLE, name="stable_flow.py")
    # no instance cache: the Batch world's is shared with tests/test_batch.py, which counts the envs in it
    env = {**batch_world.env, "REPRO_STORE": batch_world.store("audit-store"), "REPRO_BATCH_CACHE": "off"}
    r = cli("run", path, cwd=path.parent, env=env)
    assert r.code == 0, r.text[-4000:]
    r = cli("audit", "--on", "batch", "--json", cwd=tmp_path, env=env)
    assert r.code == 0, r.text[-4000:]
    (entry,) = json.loads(r.out)["entries"]
    assert entry["verdict"] == "identical", entry
    from metaflow_repro.model.interpreter import ExecutorKind
    from metaflow_repro.store import open_store
    from metaflow_repro.store.snapshot import list_records

    for name, value in batch_world.env.items():  # the store's endpoint and credentials, for this process
        monkeypatch.setenv(name, value)
    replays = [rec for rec in list_records(open_store(env["REPRO_STORE"])) if rec.replay_of]
    assert [rec.executor.kind for rec in replays] == [ExecutorKind.BATCH]
