"""Files the steps read, on the host (adapter/reads.py): the tasks' reports become the record's data files
(the flow-folder files the code package lacks: hashed, kept up to the cap) and its reads elsewhere."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

import pytest

from metaflow_extensions.repro.plugins import protocol as p
from metaflow_repro.adapter.reads import collect
from metaflow_repro.errors import BadInput, InfraError
from metaflow_repro.model.record import DataFile, StepReads
from metaflow_repro.settings import Home


def task(flow=(), outside=(), outside_count=None, watched=True):
    report = {p.READS_WATCHED: watched}
    if watched:
        report.update(
            {
                p.READS_FLOW: list(flow),
                p.READS_FLOW_COUNT: len(flow),
                p.READS_OUTSIDE: list(outside),
                p.READS_OUTSIDE_COUNT: len(outside) if outside_count is None else outside_count,
            }
        )
    return {"metadata": {p.META_READS: json.dumps(report)}}


def package(path: Path, names: list[str]) -> Path:
    with tarfile.open(path, "w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = 1
            tar.addfile(info, io.BytesIO(b"x"))
    return path


@pytest.fixture
def flow_dir(tmp_path):
    folder = tmp_path / "proj"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "train.csv").write_bytes(b"a,1\n" * 10)
    (folder / "data" / "big.bin").write_bytes(b"\0" * 100)
    (folder / "flow.py").write_text("x")
    return folder


def test_flow_folder_files_the_package_lacks_are_kept_up_to_the_cap(tmp_path, flow_dir):
    home = Home(tmp_path / "home")
    pkg = package(tmp_path / "code.tar.gz", ["flow.py", "helper.py"])
    tasks = {
        "start": [task(["flow.py", "data/train.csv"]), task(["data/train.csv", "data/big.bin", "gone.txt"])],
        "end": [task(["data/train.csv"])],
    }
    data, reads = collect(tasks, flow_dir, pkg, home, max_bytes=60, where="run F/1")
    train = flow_dir / "data" / "train.csv"
    sha = hashlib.sha256(train.read_bytes()).hexdigest()
    big = hashlib.sha256(b"\0" * 100).hexdigest()
    assert data == {
        "data/big.bin": DataFile(big, 100, ("start",), stored=False),  # past the cap: recorded only
        "data/train.csv": DataFile(sha, 40, ("start", "end"), stored=True),
    }
    assert home.input_blob(sha).read_bytes() == train.read_bytes() and not home.input_blob(big).exists()
    assert reads == {}


def test_files_elsewhere_are_listed_per_step_with_what_the_tasks_did_not_list(tmp_path, flow_dir):
    tasks = {
        "train": [task(outside=["/a", "/b"], outside_count=5), task(outside=["/b", "/c"])],
        "old": [task(watched=False)],
        "quiet": [{"metadata": {}}],
    }
    _, reads = collect(tasks, flow_dir, tmp_path / "none.tar.gz", Home(tmp_path / "h"), 0, "run F/1")
    assert reads == {"train": StepReads(("/a", "/b", "/c"), 6), "old": StepReads(unwatched=True)}


def _hosts(hosts, hosts_count, loopback, loopback_count):
    return {
        "metadata": {
            p.META_READS: json.dumps(
                {
                    p.READS_HOSTS: hosts,
                    p.READS_HOSTS_COUNT: hosts_count,
                    p.READS_LOOPBACK: loopback,
                    p.READS_LOOPBACK_COUNT: loopback_count,
                }
            )
        }
    }


def test_endpoints_are_merged_over_a_steps_tasks_loopback_apart_with_what_they_did_not_list(tmp_path, flow_dir):
    tasks = {
        "train": [_hosts(["a.example:443"], 3, ["127.0.0.1:8765"], 1), _hosts(["a.example:443", "b:80"], 2, [], 0)],
        "quiet": [task(flow=["x.csv"])],
    }
    _, reads = collect(tasks, flow_dir, tmp_path / "none.tar.gz", Home(tmp_path / "h"), 0, "run F/1")
    assert reads == {"train": StepReads((), 0, False, ("a.example:443", "b:80"), 4, ("127.0.0.1:8765",), 1)}


@pytest.mark.parametrize(
    "report,error",
    [
        ("{not json", InfraError),
        (json.dumps({p.READS_HOSTS: [80]}), BadInput),
        (json.dumps({p.READS_LOOPBACK: "127.0.0.1:80"}), BadInput),
        (json.dumps({p.READS_HOSTS_COUNT: "many"}), BadInput),
        (json.dumps({p.READS_FLOW: "data/x"}), BadInput),
        (json.dumps({p.READS_OUTSIDE: [3]}), BadInput),
        (json.dumps({p.READS_OUTSIDE_COUNT: "many"}), BadInput),
    ],
)
def test_a_tasks_report_is_checked(tmp_path, flow_dir, report, error):
    with pytest.raises(error, match="start"):
        collect({"start": [{"metadata": {p.META_READS: report}}]}, flow_dir, tmp_path / "p", Home(tmp_path), 0, "r")


def test_a_reported_path_that_leaves_the_flow_folder_is_never_hashed(tmp_path, flow_dir):
    (tmp_path / "secret").write_text("s")
    (flow_dir / "link").symlink_to(tmp_path / "secret")
    tasks = {"start": [task(["../secret", "link", "/etc/passwd", ".mf_code/x"])]}
    data, _ = collect(tasks, flow_dir, tmp_path / "p", Home(tmp_path / "h"), 1 << 20, "r")
    assert data == {}


def test_what_the_record_could_not_hold_is_counted_not_listed_and_the_record_reads_back(tmp_path, flow_dir):
    """A path with a control character or a host no record spells must not keep a finished run from being
    recorded, nor make its record unreadable: it is counted among the step's reads, never listed."""
    from metaflow_repro.model import validate as v
    from metaflow_repro.model.record import absolute_path, host_port

    report = task(outside=["/home/u/a\tb.csv", "/home/u/ok.csv"])
    report["metadata"][p.META_READS] = json.dumps(
        {
            **json.loads(report["metadata"][p.META_READS]),
            p.READS_HOSTS: ["a b:80", "hub.example:443"],
            p.READS_HOSTS_COUNT: 2,
        }
    )
    _, reads = collect({"train": [report]}, flow_dir, tmp_path / "none.tar.gz", Home(tmp_path / "h"), 0, "run F/1")
    assert reads["train"].files == ("/home/u/ok.csv",) and reads["train"].files_count == 2
    assert reads["train"].hosts == ("hub.example:443",) and reads["train"].hosts_count == 2
    at = v.At("the record", "reads")  # what a record reads back: every value listed passes its codec
    assert [absolute_path(f, at) for f in reads["train"].files] and [host_port(h, at) for h in reads["train"].hosts]
