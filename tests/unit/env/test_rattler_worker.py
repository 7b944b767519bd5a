"""py-rattler's worker process (``metaflow_repro.env.rattler_worker``): how its answers, crashes and silences
become repro's errors, and a real worker solving against a small local channel while this process never
imports rattler."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from metaflow_repro.env import rattler_worker
from metaflow_repro.env.rattler_worker import RattlerFailed, ask, read_answer
from metaflow_repro.errors import InfraError
from metaflow_repro.testing.conda_channel import Entry, Meta, index, write_package


@pytest.mark.parametrize(
    "returncode, stdout, stderr, words",
    [
        (0, "", "", "answered something that is not JSON"),
        (0, "{not json", "", "answered something that is not JSON"),
        (0, '{"other": 1}', "", "without an answer"),
        (0, '{"error": {"kind": 1}}', "", "without an answer"),
        (
            1,
            '{"result": 1}',
            "Traceback ...\nImportError: no rattler",
            "exited with code 1 without an answer:\nTraceback",
        ),
        (-signal.SIGABRT, "", "", "was killed by SIGABRT"),
        (-signal.SIGSEGV, '{"result": 1}', "", "was killed by SIGSEGV"),  # a crash after answering is a crash
        (-200, "", "", "was killed by signal 200"),
    ],
)
def test_a_worker_that_did_not_answer_is_an_infrastructure_failure(returncode, stdout, stderr, words):
    with pytest.raises(InfraError, match="step 's'") as err:
        read_answer("solve", returncode, stdout, stderr, "step 's'")
    assert not isinstance(err.value, RattlerFailed) and words in str(err.value), str(err.value)


def test_an_answer_is_its_result_and_rattlers_error_keeps_its_kind():
    assert read_answer("solve", 0, '{"result": {"records": []}}', "", "w") == {"records": []}
    with pytest.raises(RattlerFailed) as err:
        read_answer("solve", 0, json.dumps({"error": {"kind": "SolverError", "message": "no six"}}), "", "w")
    assert (err.value.kind, err.value.detail, err.value.exit_code) == ("SolverError", "no six", 3)
    assert str(err.value) == "w: rattler (solve) failed (SolverError): no six"


def test_a_worker_without_rattler_says_how_to_install_it():
    code = "import sys; sys.modules['rattler'] = None\nfrom metaflow_repro.env.rattler_worker import serve\n"
    code += 'print(serve(\'{"op": "index", "folder": "."}\')[\'error\'][\'kind\'])'  # import rattler fails there
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.strip() == rattler_worker.NO_RATTLER, proc.stderr
    answer = json.dumps({"error": {"kind": rattler_worker.NO_RATTLER, "message": "py-rattler is not installed for /p"}})
    with pytest.raises(
        InfraError, match=r"w: conda-source = 'conda' needs py-rattler .*pip install 'py-rattler"
    ) as err:
        read_answer("solve", 0, answer, "", "w")
    assert not isinstance(err.value, RattlerFailed)


def test_a_real_worker_answers_errors_and_times_out():
    with pytest.raises(RattlerFailed) as err:
        ask("no-such-op", {}, where="w")
    assert err.value.kind == "KeyError"
    with pytest.raises(InfraError, match=r"did not finish within 0 s") as slow:
        ask("solve", {}, where="w", timeout=0.01)
    assert not isinstance(slow.value, RattlerFailed)


def test_a_worker_solves_a_local_channel_and_this_process_never_loads_rattler(tmp_path):
    channel = tmp_path / "channel"
    write_package(channel, Meta("tiny", "1.0", "0", "noarch", noarch="generic"), [Entry("share/tiny", b"x")])
    index(channel)  # through the worker too
    request = {"channels": [channel.as_uri()], "platform": "linux-64", "virtual": ["__unix=0=0"], "leave_out": []}
    request["cache_dir"] = str(tmp_path / "cache")
    answer = ask("solve", {**request, "specs": ["tiny ==1.0"]}, where="w")
    (rec,) = answer["records"]
    assert (rec["name"], rec["version"], rec["subdir"], len(rec["sha256"])) == ("tiny", "1.0", "noarch", 64)
    assert answer["virtual"] == ["__unix=0=0"]
    detected = ask("solve", {**request, "specs": ["tiny"], "virtual": None, "leave_out": ["__archspec"]}, where="w")
    assert detected["virtual"] and not any(v.startswith("__archspec") for v in detected["virtual"])
    with pytest.raises(RattlerFailed) as err:
        ask("solve", {**request, "specs": ["tiny ==9"]}, where="w")
    assert err.value.kind == "SolverError" and "tiny" in err.value.detail
    # in a clean interpreter (this test process may have loaded rattler elsewhere): no rattler after all that
    req = json.dumps({**request, "specs": ["tiny"]})
    probe = f"import json, sys\nfrom metaflow_repro.env.rattler_worker import ask\nask('solve', json.loads({req!r}), where='w')\nprint('rattler' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


HOSTILE = "open({marker!r}, 'a').write(__name__ + '\\n')\nraise SystemExit('the caller folder\\'s ' + __name__)\n"


def test_a_worker_started_in_a_folder_with_a_hostile_json_py_still_answers(tmp_path, monkeypatch):
    """``python -m`` puts the current folder first on sys.path: the worker must not import the caller's
    json.py, asyncio.py or rattler.py (nor find them through a relative PYTHONPATH entry)."""
    here, marker = tmp_path / "project", tmp_path / "imported"
    here.mkdir()
    for name in ("json", "asyncio", "rattler", "metaflow_repro"):
        (here / f"{name}.py").write_text(HOSTILE.format(marker=str(marker)))
    channel = tmp_path / "channel"
    write_package(channel, Meta("tiny", "1.0", "0", "noarch", noarch="generic"), [Entry("share/tiny", b"x")])
    monkeypatch.chdir(here)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([".", "", os.environ.get("PYTHONPATH", "")]))
    with pytest.raises(RattlerFailed) as err:  # an answer, from the worker's own json
        ask("no-such-op", {}, where="w")
    assert err.value.kind == "KeyError"
    index(channel)  # a real answer: rattler itself (and asyncio) imported in the worker
    assert json.loads((channel / "noarch" / "repodata.json").read_text())["packages"], "no repodata written"
    assert not marker.exists(), marker.read_text()
