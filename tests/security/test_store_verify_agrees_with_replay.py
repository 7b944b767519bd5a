"""Issue 22 item 11: `repro store verify` and `repro replay` share one validation path. The same tampered
records (one field each) go to verify (the whole-store listing and one REF at a time) and to replay's
``load_request``, the stage replay runs before it fetches or runs anything, and each gets the same
verdict from both, for the same reason."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from metaflow_repro import executors
from metaflow_repro.errors import BadInput
from metaflow_repro.model.record import NO_CODE
from metaflow_repro.operations.replay import load_request
from metaflow_repro.operations.verify import check_store
from metaflow_repro.store import LocalStore, layout
from metaflow_repro.store.snapshot import push
from tests.helpers import cli
from tests.store_fakes import fake_run

ID_A = "FakeFlow:flows/a.py"  # filed under runs/FakeFlow@flows~a.py/


@dataclass(frozen=True)
class Tamper:
    name: str
    edit: Callable[[dict], Any]
    refused: bool
    folder: str = ""  # where it is filed under runs/ ("": the folder push would use)


def _set(path: str, value: Any) -> Callable[[dict], None]:
    def edit(doc: dict) -> None:
        *parents, last = path.split(".")
        for key in parents:
            doc = doc[key]
        doc[last] = value

    return edit


def _deep(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = [value]
    return value


REFUSED = [
    Tamper("flow_file absolute", _set("flow_file", "/etc/passwd"), True),
    Tamper("flow_file ..", _set("flow_file", "../outside.py"), True),
    Tamper("code_sha256 not hex", _set("code_sha256", "xyz"), True),
    Tamper("code_sha256 all zeros", _set("code_sha256", NO_CODE), True),
    Tamper("run_id of another run", _set("run_id", "other"), True),
    Tamper("flow of another flow", _set("flow", "OtherFlow"), True),
    Tamper("schema from the future", _set("schema_version", 99), True),
    Tamper("not a record", _set("schema", "something.else"), True),
    Tamper("unknown key", _set("evil", 1), True),
    Tamper("status unknown", _set("status", "weird"), True),
    Tamper("parameter name", _set("parameters", {"bad name": 1}), True),
    Tamper("parameter with NUL", _set("parameters", {"alpha": "a\0b"}), True),
    Tamper("parameter nested too deep", _set("parameters", {"alpha": _deep(80)}), True),
    Tamper("plain config with NUL", _set("configs", {"c": {"value": json.dumps("a\0b"), "plain": True}}), True),
    Tamper("config not JSON", _set("configs", {"c": {"value": "{not json"}}), True),
    Tamper("include file name", _set("include_files", {"f": {"sha256": "a" * 64, "size": 1, "name": "../x"}}), True),
    Tamper("run option --run-id-file=", _set("run_options", ["--run-id-file=/tmp/x"]), True),
    Tamper("run option --run-id-file", _set("run_options", ["--run-id-file", "/tmp/x"]), True),
    Tamper("run option --metadata", _set("run_options", ["--metadata=service"]), True),
    Tamper("run option with NUL", _set("run_options", ["--tag=a\0b"]), True),
    Tamper("pythonhashseed abc", _set("pythonhashseed", "abc"), True),
    Tamper("pythonhashseed too large", _set("pythonhashseed", "4294967296"), True),
    Tamper("pythonhashseed two seeds", _set("pythonhashseed", "0,1"), True),
    Tamper("pythonhashseed negative", _set("pythonhashseed", "-1"), True),
    Tamper("identity, filed under the class", _set("identity", ID_A), True, folder="FakeFlow"),
    Tamper("no identity, filed under one", _set("identity", ""), True, folder="FakeFlow@flows~a.py"),
    Tamper("another file's identity", _set("identity", "FakeFlow:flows/b.py"), True, folder="FakeFlow@flows~a.py"),
    Tamper("identity leaving the project", _set("identity", "FakeFlow:../x.py"), True),
    Tamper("replay_of not a ref", _set("replay_of", "not a ref"), True),
    Tamper("created_at not text", _set("created_at", 5), True),
    Tamper("host not text", _set("host", {"os": 1}), True),
    Tamper("env id leaving locks/", _set("steps.start.env_id", "../../x"), True),
    Tamper("pickle check malformed", _set("pickle_checks", [{"bogus": 1}]), True),
    Tamper("executor unknown", _set("executor", {"kind": "mars"}), True),
    Tamper("inputs ref malformed", _set("inputs", {"no ref": {}}), True),
]
ACCEPTED = [
    Tamper("identity in its own folder", _set("identity", ID_A), False, folder="FakeFlow@flows~a.py"),
    Tamper("pythonhashseed 123", _set("pythonhashseed", "123"), False),
    Tamper("pythonhashseed random", _set("pythonhashseed", "random"), False),
    Tamper("pythonhashseed empty", _set("pythonhashseed", ""), False),
    Tamper("run option --tag", _set("run_options", ["--tag=x"]), False),
    Tamper("run option --max-workers", _set("run_options", ["--max-workers", "4"]), False),
    Tamper("parameter", _set("parameters", {"alpha": "ok"}), False),
    Tamper("nested parameter with NUL (sent as JSON)", _set("parameters", {"alpha": {"k": "a\0b"}}), False),
    Tamper("config (JSON) with NUL", _set("configs", {"c": {"value": json.dumps("a\0b")}}), False),
    Tamper("created_at", _set("created_at", "2030-01-01T00:00:00+00:00"), False),
    Tamper("duration", _set("duration_s", 12.5), False),
    Tamper("status failed", _set("status", "failed"), False),
    Tamper("config", _set("configs", {"c": {"value": '{"a": 1}'}}), False),
    Tamper("replay_of", _set("replay_of", "FakeFlow/1"), False),
    Tamper("host", _set("host", {"os": "linux"}), False),
]
CASES = REFUSED + ACCEPTED


def _file(root, run, i: int, case: Tamper) -> str:
    """File case ``i``'s record (run id t<i>) in the store; its REF (folder/run id)."""
    doc = json.loads(run.record.to_json())
    doc["run_id"] = f"t{i}"
    case.edit(doc)
    folder = case.folder or layout.flow_dir("FakeFlow", doc.get("identity") or "")
    path = root / layout.record(folder, f"t{i}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return f"{folder}/t{i}"


def _replay_verdict(ref: str, store, settings) -> str:
    """ "ok", or why replay refuses (``load_request``: the checks replay makes before it fetches anything)."""
    place = executors.for_place("local")
    try:
        load_request(ref, store, settings, place, place.executor())
    except BadInput as exc:
        return str(exc)
    return "ok"


def _verify_verdict(ref: str, store) -> str:
    try:
        found = check_store(store, ref)
    except BadInput as exc:
        return str(exc)
    [(_, problems)] = found.results
    return "; ".join(problems) or "ok"


@pytest.fixture(scope="module")
def tampered(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("agree")
    root = tmp / "store"
    run = fake_run(tmp / "home")
    store = LocalStore(str(root))
    push(run.record, store, run.settings)  # every object the records name is there, intact
    refs = [_file(root, run, i, case) for i, case in enumerate(CASES)]
    return store, run.settings, refs


def test_there_are_fifty_tampered_records():
    assert len(CASES) == 50 and len({c.name for c in CASES}) == 50


@pytest.mark.parametrize("i", range(len(CASES)), ids=[c.name for c in CASES])
def test_verify_and_replay_give_the_same_verdict_for_the_same_reason(tampered, i):
    store, settings, refs = tampered
    case, ref = CASES[i], refs[i]
    replayed = _replay_verdict(ref, store, settings)
    verified = _verify_verdict(ref, store)
    assert (replayed != "ok") == (verified != "ok") == case.refused, (replayed, verified)
    if case.refused:  # the same reason: replay's refusal carries each of verify's problems
        for problem in verified.split("; "):
            assert problem.removeprefix("cannot be replayed: ") in replayed, (problem, replayed)


def test_the_whole_store_listing_gives_the_same_verdicts(tampered):
    store, _, refs = tampered
    found = check_store(store)
    bad = {key.split("/")[-2] for key, _ in found.broken}
    bad |= {ref.split("/")[1] for ref, problems in found.results if problems}
    assert bad == {f"t{i}" for i, c in enumerate(CASES) if c.refused}
    assert {ref.split("/")[1] for ref, _ in found.results} | bad >= {f"t{i}" for i in range(len(CASES))}


def test_the_cli_agrees_too(tampered, tmp_path):
    """The command lines, on two cases of the issue: verify says what is wrong (exit 1), replay refuses
    it (exit 2) for the same reason, and nothing is run."""
    store, settings, refs = tampered
    for i in (CASES.index(REFUSED[20]), CASES.index(REFUSED[25])):  # pythonhashseed abc; a folder not its own
        verify = cli("store", "verify", refs[i], "--store", store.uri, env={"REPRO_HOME": str(settings.home.root)})
        replay = cli("replay", refs[i], "--store", store.uri, env={"REPRO_HOME": str(settings.home.root)})
        assert verify.code in (1, 2) and replay.code == 2, (verify.text, replay.text)
        assert "Traceback" not in verify.text + replay.text
