"""A step that contacts a network endpoint and reads a file elsewhere (issue 23, items 1, 4 and 5): a flow
downloading from an HTTP server on 127.0.0.1 (in this test) is recorded as contacting it, loopback apart,
named by `pytest --repro`'s summary and `repro report`, and fails under `--repro-hermetic`, naming the
endpoint and the file, until `[tool.repro] hermetic-allow` names the host:port and a path glob; a record of
that run written as before issue 23 (schema 4, no `reads`) still reads and replays. Real Metaflow runs; two
pytest runs and one replay serve every assertion."""

from __future__ import annotations

import http.server
import json
import threading

import pytest

from metaflow_repro.model.record import from_json
from tests.helpers import cli

pytestmark = pytest.mark.slow
FILES = {"files_count": 1, "unwatched": False}

FLOW = """
import urllib.request

from metaflow import FlowSpec, step


class HermeticNetFlow(FlowSpec):
    @step
    def start(self):
        self.rows = urllib.request.urlopen("http://127.0.0.1:PORT/train.csv", timeout=30).read().decode()
        self.settings_text = open(OUTSIDE).read()
        self.next(self.end)

    @step
    def end(self):
        pass


if __name__ == "__main__":
    HermeticNetFlow()
"""


class _Data(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"a,1\nb,2\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def data_server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Data)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_a_step_that_downloads_is_listed_fails_strict_mode_and_passes_once_allowed(
    pytester, monkeypatch, data_server, tmp_path
):
    outside = tmp_path / "etc-myapp" / "settings.ini"
    outside.parent.mkdir()
    outside.write_text("[app]\nk = 1\n")
    monkeypatch.setenv("METAFLOW_DATASTORE_SYSROOT_LOCAL", str(pytester.path / "mf"))
    store = f"file://{pytester.path / 'store'}"
    pyproject = f'[tool.repro]\nconda-source = "pypi"\nstore = "{store}"\n'
    pytester.makefile(".toml", pyproject=pyproject)
    path = pytester.path / "net_flow.py"
    path.write_text(FLOW.replace("PORT", data_server.split(":")[1]).replace("OUTSIDE", repr(str(outside))))
    assert cli("lock", path).code == 0
    strict = ("-p", "no:cacheprovider", "--repro", "--repro-hermetic", path.name)
    r = pytester.runpytest_subprocess(*strict)
    r.assert_outcomes(passed=3, failed=1)  # [lock], [pickle] and end pass; start contacted the server
    text = r.stdout.str()
    assert "HermeticNetFlow.start failed" in text
    assert f"start contacted 1 network endpoint(s), which a replay cannot give back: {data_server}" in text
    assert f"start read 1 file(s) outside the snapshot, which a replay cannot give back: {outside}" in text
    summary = (
        f"note: start read 1 file outside the snapshot and contacted {data_server}; a replay cannot give these back"
    )
    assert summary in text
    # allowed by host:port and a glob: it passes, and is recorded in the store (a baseline)
    allow = f'hermetic-allow = ["{outside.parent}/*", "{data_server}"]\n'
    pytester.makefile(".toml", pyproject=pyproject + allow)
    pytester.runpytest_subprocess(*strict, "--repro-update").assert_outcomes(passed=4)
    # the record names the endpoint, loopback apart, and so does `repro report`
    (recorded,) = (pytester.path / "store" / "runs").glob("*/*/record.json")
    doc = json.loads(recorded.read_text())
    assert doc["reads"] == {"start": {**FILES, "files": [str(outside)], "loopback": [data_server], "loopback_count": 1}}
    report = cli("report", "HermeticNetFlow/latest", "--format", "json", "--store", store, cwd=pytester.path)
    assert report.code == 0, report.text[-3000:]
    (flow,) = json.loads(report.out)["flows"]
    assert [(o["step"], o["loopback"], o["hosts"]) for o in flow["outside"]] == [("start", [data_server], [])]
    md = cli("report", "HermeticNetFlow/latest", "--store", store, cwd=pytester.path)
    assert summary[len("note: ") :] in md.out
    # a record of that run as written before issue 23 (schema 4: no `reads`) still reads and replays
    del doc["reads"]
    doc["schema_version"] = 4
    old = pytester.path / "old-record.json"
    old.write_text(json.dumps(doc))
    assert from_json(old.read_text(), str(old)).reads == {}
    replay = cli("replay", old, "--store", store, cwd=pytester.path)
    assert replay.code == 0, replay.text[-4000:]
    assert "result: identical" in replay.out and "a replay cannot give these back" not in replay.text
