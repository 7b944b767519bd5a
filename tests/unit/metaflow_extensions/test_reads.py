"""What a task notes of the files its step opens (reads.py): the hook's filter (reads only, the flow's folder
apart, ignored prefixes, each path once), its bounded report, and a real audit hook in a real interpreter."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

from metaflow_extensions.repro.plugins import protocol as p
from metaflow_extensions.repro.plugins import reads
from metaflow_repro.model.record import host_port

READ, WRITE = os.O_RDONLY | os.O_CLOEXEC, os.O_WRONLY | os.O_CREAT
NO_HOSTS = {p.READS_HOSTS: [], p.READS_HOSTS_COUNT: 0, p.READS_LOOPBACK: [], p.READS_LOOPBACK_COUNT: 0}


def _files(tmp_path: Path) -> tuple[Path, Path, Path]:
    flow, env, elsewhere = tmp_path / "proj", tmp_path / "env", tmp_path / "home"
    for folder in (flow / "data", flow / ".metaflow", env / "lib", elsewhere):
        folder.mkdir(parents=True)
    for f in (
        flow / "data" / "train.csv",
        flow / "flow.py",
        env / "lib" / "x.py",
        elsewhere / "a.txt",
        elsewhere / "out.txt",
    ):
        f.write_text("x")
    return flow, env, elsewhere


def test_the_filter_keeps_reads_of_the_flow_folder_and_elsewhere_but_not_ignored_folders(tmp_path):
    flow, env, elsewhere = _files(tmp_path)
    watch = reads.Reads(str(flow), [str(env), str(flow / ".venv")], cwd=str(tmp_path))
    hook = watch.hook()
    hook("os.chdir", ("proj",))  # relative paths are resolved from the current folder then
    for path, flags in [
        ("data/train.csv", READ),  # relative to the current folder
        (str(flow / "data" / "train.csv"), READ),  # the same file again
        (str(flow / "flow.py"), os.O_RDWR),
        (str(env / "lib" / "x.py"), READ),  # the step's environment
        (str(flow / ".metaflow" / "x"), READ),  # Metaflow's datastore
        (str(elsewhere / "out.txt"), WRITE),  # written, not read
        (str(elsewhere / "out.txt"), READ),  # and read back: the step's own file
        (os.fsencode(str(elsewhere / "a.txt")), READ),  # bytes, read
        (3, READ),  # a file descriptor: no path
        ([], READ),  # nothing a hook is given can fail the step's own open()
        (os.fsencode(str(elsewhere / "out.txt")), WRITE),  # bytes, written (an existing file)
    ]:
        hook("open", (path, "r", flags))
    hook("os.listdir", (str(elsewhere),))
    watch.compact()
    assert list(watch.flow) == ["data/train.csv", "flow.py"]
    assert list(watch.outside) == [str(elsewhere / "a.txt")]
    report = json.loads(watch.report(1))
    assert report == {
        p.READS_WATCHED: True,
        p.READS_FLOW: ["data/train.csv"],
        p.READS_FLOW_COUNT: 2,
        p.READS_OUTSIDE: [str(elsewhere / "a.txt")],
        p.READS_OUTSIDE_COUNT: 1,
        **NO_HOSTS,
    }
    hook("open", (str(elsewhere / "later.txt"), "r", READ))  # after the report: not the step's
    watch.compact()
    assert list(watch.outside) == [str(elsewhere / "a.txt")]


def test_a_task_that_read_nothing_reports_nothing_and_files_gone_are_left_out(tmp_path):
    flow, _, elsewhere = _files(tmp_path)
    watch = reads.Reads(str(flow), [])
    watch.hook()("open", (str(elsewhere / "gone.txt"), "r", READ))
    assert watch.report(10) == ""


def test_the_hook_sorts_out_its_events_when_they_pile_up(tmp_path, monkeypatch):
    flow, _, _ = _files(tmp_path)
    monkeypatch.setattr(reads, "COMPACT_AT", 10)
    watch = reads.Reads(str(flow), [])
    hook = watch.hook()
    for _ in range(25):
        hook("open", (str(flow / "data" / "train.csv"), "r", READ))
    assert len(watch.events) <= 10 and list(watch.flow) == ["data/train.csv"]


def test_the_ignored_prefixes_name_the_interpreter_and_system_folders_but_never_the_flows_own():
    found = reads.ignored_prefixes("/data/mf")
    assert sys.prefix in found and "/data/mf" in found and "/proc/" in found and "/etc/" in found


def test_a_real_audit_hook_notes_what_the_step_opens(tmp_path):
    flow, _, elsewhere = _files(tmp_path)
    script = textwrap.dedent(
        f"""
        import csv, json, pathlib, sys
        sys.path.insert(0, {str(Path(reads.__file__).parents[3])!r})
        from metaflow_extensions.repro.plugins import reads
        reads.watch({str(flow)!r})
        with open("data/train.csv") as fh:
            list(csv.reader(fh))
        pathlib.Path({str(elsewhere / "a.txt")!r}).read_text()
        open({str(elsewhere / "out.txt")!r}, "w").close()
        import json as again  # already imported: nothing opened
        print(reads.report())
        """
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=flow, capture_output=True, text=True, check=True).stdout
    report = json.loads(out)
    assert report[p.READS_FLOW] == ["data/train.csv"] and report[p.READS_OUTSIDE] == [str(elsewhere / "a.txt")]


class _Sock:
    def __init__(self, family):
        self.family = family


def test_endpoints_name_the_host_looked_up_not_its_address_and_list_loopback_apart():
    watch = reads.Reads("/nowhere", [], ignored_hosts=reads.endpoint_hosts(["http://127.0.0.1:9000"]))
    hook = watch.hook()
    hook("socket.getaddrinfo", ("huggingface.co", 443, 0, 1, 6))
    hook("socket.connect", (_Sock(socket.AF_INET), ("18.1.2.3", 443)))  # huggingface.co's address
    hook("socket.connect", (_Sock(socket.AF_INET), ("10.0.0.7", 5432)))  # no name looked up: the address
    hook("socket.getaddrinfo", ("127.0.0.1", 8765, 0, 1, 6))
    hook("socket.connect", (_Sock(socket.AF_INET), ("127.0.0.1", 8765)))  # the same endpoint
    hook("socket.connect", (_Sock(socket.AF_INET6), ("::1", 8766, 0, 0)))
    hook("socket.connect", (_Sock(socket.AF_INET), ("127.0.0.1", 9000)))  # the datastore's endpoint
    hook("socket.connect", (_Sock(socket.AF_UNIX), "/run/x.sock"))  # no network endpoint
    hook("socket.connect", (object(), ("1.1.1.1", 53)))  # a socket the hook cannot read: left out
    hook("socket.getaddrinfo", (None, 80, 0, 1, 6))  # a server's own address
    hook("socket.getaddrinfo", ("bad host\n", 80, 0, 1, 6))  # nothing a record could show
    hook("socket.getaddrinfo", ("pypi.example", "https", 0, 1, 6))  # a service name
    hook("socket.getaddrinfo", ("db.example", "postgres", 0, 1, 6))
    hook("socket.connect", (_Sock(socket.AF_INET6), ("fe80::1%eth0-x_y", 9, 0, 0)))
    report = json.loads(watch.report(10))
    # names looked up, then addresses connected to with no name looked up for their port
    hosts = ["huggingface.co:443", "pypi.example:443", "db.example", "10.0.0.7:5432", "[fe80::1%eth0-x_y]:9"]
    assert report[p.READS_HOSTS] == hosts and report[p.READS_HOSTS_COUNT] == 5
    for host in hosts + report[p.READS_LOOPBACK]:  # each as the record spells it
        assert host_port(host, None) == host
    assert report[p.READS_LOOPBACK] == ["127.0.0.1:8765", "[::1]:8766"] and report[p.READS_LOOPBACK_COUNT] == 2
    assert report[p.READS_FLOW] == [] and report[p.READS_OUTSIDE] == []
    hook("socket.getaddrinfo", ("later.example", 443, 0, 1, 6))  # after the report: not the step's
    assert watch.endpoints.listed()[0] == hosts


def test_the_services_left_out_are_the_datastore_metadata_and_store_endpoints_and_credentials():
    hosts = reads.endpoint_hosts(["https://s3.example.com", "http://md.internal:8080/api", "", "::bad"])
    assert {"s3.example.com:443", "md.internal:8080", "169.254.169.254"} <= set(hosts)
    assert "s3.amazonaws.com" not in hosts and "s3.amazonaws.com" in reads.endpoint_hosts([], aws_s3=True)
    found = reads.Endpoints(
        reads.endpoint_hosts(["https://s3.example.com", "http://md.internal:8080/api"], True, "bkt")
    )
    for host, port in [
        ("s3.example.com", 443),
        ("md.internal", 8080),
        ("169.254.169.254", 80),
        ("bkt.s3.us-east-1.amazonaws.com", 443),  # the datastore's bucket
        ("s3.us-east-1.amazonaws.com", 443),  # path-style: any bucket, the datastore's among them
        ("md.internal", 9999),  # another port of that host: the step's
        ("huggingface.co", 443),
        ("training-data.s3.amazonaws.com", 443),  # another bucket, read with boto3 or s3fs: the step's
    ]:
        found.looked_up(host, port)
    assert found.listed() == (["md.internal:9999", "huggingface.co:443", "training-data.s3.amazonaws.com:443"], [])


def test_a_real_audit_hook_notes_a_download_from_a_local_http_server(tmp_path):
    flow, _, _ = _files(tmp_path)
    script = textwrap.dedent(
        f"""
        import http.server, sys, threading, urllib.request
        sys.path.insert(0, {str(Path(reads.__file__).parents[3])!r})
        from metaflow_extensions.repro.plugins import reads
        server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        ignored = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
        threading.Thread(target=ignored.serve_forever, daemon=True).start()
        reads.watch({str(flow)!r}, ignored_hosts=reads.endpoint_hosts(["http://127.0.0.1:%d" % ignored.server_port]))
        urllib.request.urlopen("http://127.0.0.1:%d/data/train.csv" % server.server_port).read()
        urllib.request.urlopen("http://127.0.0.1:%d/data/train.csv" % ignored.server_port).read()
        print(server.server_port)
        print(reads.report())
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=flow, capture_output=True, text=True, check=True)
    port, text = proc.stdout.splitlines()[-2:]
    report = json.loads(text)
    assert report[p.READS_LOOPBACK] == [f"127.0.0.1:{port}"] and report[p.READS_HOSTS] == []


def test_a_relative_path_names_another_file_after_a_chdir_and_a_root_file_is_no_relative_one(tmp_path):
    """The filter decides once per folder as an event named it: a chdir makes relative folders new ones."""
    flow, _, elsewhere = _files(tmp_path)
    (elsewhere / "data").mkdir()
    (elsewhere / "data" / "train.csv").write_text("x")
    watch = reads.Reads(str(flow), [], cwd=str(flow))
    hook = watch.hook()
    hook("open", ("data/train.csv", "r", READ))
    watch.compact()  # "data" is decided: the flow's
    hook("os.chdir", (str(elsewhere),))
    hook("open", ("data/train.csv", "r", READ))  # the same words, another file
    hook("open", ("a.txt", "r", READ))  # the current folder ("")
    hook("open", ("/a.txt", "r", READ))  # the root folder ("/"): not the current one
    watch.compact()
    assert list(watch.flow) == ["data/train.csv"]
    assert list(watch.outside) == [str(elsewhere / "data" / "train.csv"), str(elsewhere / "a.txt"), "/a.txt"]


def test_traffic_inside_quiet_is_not_the_steps_contact_with_the_outside():
    """metaflow.S3 reads are recorded as S3 inputs (given back to a replay) and repro's own HEADs are
    repro's: neither is a host the step contacted; traffic after the block is again."""
    from metaflow_extensions.repro.plugins import reads

    watcher = reads.Reads("/nowhere", [])
    with reads.quiet():
        watcher.net("socket.getaddrinfo", ("bucket.s3.example.com", 443, 0, 0, 0, 0))
    assert watcher.endpoints.listed() == ([], [])
    watcher.net("socket.getaddrinfo", ("hub.example.com", 443, 0, 0, 0, 0))
    assert watcher.endpoints.listed() == (["hub.example.com:443"], [])


def test_a_flow_folder_file_read_and_then_written_is_no_input_the_snapshot_can_hold(tmp_path):
    """Its bytes at the end are not what the step read: it is listed among the reads elsewhere, never
    recorded (and given back) as a data file; a file read and never written stays a data file."""
    flow, _, _ = _files(tmp_path)
    (flow / "data" / "seen.txt").write_text("1\n")
    watch = reads.Reads(str(flow), [], cwd=str(flow))
    hook = watch.hook()
    hook("open", ("data/seen.txt", "r", READ))
    hook("open", ("data/train.csv", "r", READ))
    hook("open", ("data/seen.txt", "a", WRITE))
    report = json.loads(watch.report(10))
    assert report[p.READS_FLOW] == ["data/train.csv"]
    assert report[p.READS_OUTSIDE] == [str(flow / "data" / "seen.txt")]


def test_a_task_whose_reads_were_not_watched_says_so_never_that_it_read_nothing(monkeypatch):
    """REPRO_WATCH_READS=0 (or Python 3.7) leaves what the step read unknown: strict mode must not pass it."""
    monkeypatch.setattr(reads, "_reads", None)
    monkeypatch.setenv(p.WATCH_READS_VAR, "0")
    assert reads.watch("/nowhere") is None
    assert json.loads(reads.report()) == {p.READS_WATCHED: False}
