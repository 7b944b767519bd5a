"""Issue 22 item 10: what repro prints is bounded and safe to print. A store whose records hold a 2 MB
``metaflow_version``, terminal escapes and a bidi override in their fields, a 10 MB ``latest`` pointer, and
a 10,000-character REF: through the real command line, no line of stdout or stderr is longer than the
bound, none holds a raw control or invisible format character, and a value cut short says how long it was.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from metaflow_repro.errors import LINE_CHARS, VALUE_CHARS
from metaflow_repro.store import layout, open_store
from tests.helpers import cli
from tests.unit.model.test_record import make_record

#: a raw byte a terminal acts on (C0 but tab and newline, DEL, C1) or a character that reorders or hides
#: text (bidi overrides and isolates, zero-width characters, line separators)
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2066-\u2069\ufeff]")
ESCAPES = "\x1b[2J\x1b]0;owned\x07\u202eevil\r\x9b"
#: the longest line a bounded value or line may take: the bound, and the note of the length cut off
MAX_LINE = LINE_CHARS + len("...(99999999 characters)")


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("hostile") / "store"
    store = open_store(root.as_uri())

    def put(record):
        store.put_bytes(
            layout.record(layout.flow_dir(record.flow, record.identity), record.run_id), record.to_json().encode()
        )

    base = make_record()
    put(dataclasses.replace(base, run_id="1", metaflow_version="9" * 2_000_000))
    put(dataclasses.replace(base, run_id="2", created_at="2024" + ESCAPES, status="success"))
    put(dataclasses.replace(base, flow="Other", run_id="3", run_options=("--tag", ESCAPES * 3000)))
    store.put_bytes(layout.latest(layout.flow_dir("Other", base.identity)), b"x" * 10_000_000)
    return root.as_uri()


def _check(r, where: str) -> None:
    for name, text in (("stdout", r.out), ("stderr", r.err)):
        raw = RAW.search(text)
        assert raw is None, (
            f"{where}: raw {raw.group()!r} in {name}: {text[max(0, raw.start() - 80) : raw.end() + 20]!r}"
        )
        longest = max((len(line) for line in text.splitlines()), default=0)
        assert longest <= MAX_LINE, f"{where}: a line of {longest} characters in {name}"


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["show", "MyFlow/1"],
        ["show", "MyFlow/2"],
        ["show", "Other/3"],
        ["show", "Other/latest"],
        ["show", "MyFlow/" + "a" * 10_000],
        ["show", "My\x1b[2JFlow/1"],
        ["verify"],
    ],
    ids=[
        "ls",
        "show-2mb-version",
        "show-escapes",
        "refused-record-escapes",
        "latest-10mb",
        "ref-10000",
        "ref-escape",
        "verify",
    ],
)
def test_no_line_is_unbounded_or_holds_a_raw_control_character(hostile_store, tmp_path, args):
    r = cli("store", *args, "--store", hostile_store, env={"REPRO_HOME": str(tmp_path / "home")}, timeout=300)
    assert r.code in (0, 1, 2), r.text[:2000]
    _check(r, " ".join(args)[:60])


def test_what_was_cut_or_escaped_is_still_said(hostile_store, tmp_path):
    env = {"REPRO_HOME": str(tmp_path / "home")}
    show = cli("store", "show", "MyFlow/1", "--store", hostile_store, env=env, timeout=300)
    assert show.code == 0 and "metaflow " + "9" * VALUE_CHARS + "...(2000000 characters)" in show.out
    listing = cli("store", "ls", "--store", hostile_store, env=env, timeout=300)
    assert "2024\\x1b[2J\\x1b]0;owned\\x07\\u202eevil\\r\\x9b" in listing.out
    ref = cli("store", "show", "MyFlow/" + "a" * 10_000, "--store", hostile_store, env=env, timeout=300)
    assert ref.code == 2 and "characters)" in ref.err, ref.err[:3000]


def test_the_report_terminal_rendering_is_escaped_and_bounded():
    from metaflow_repro.report import render
    from metaflow_repro.report.document import build_flow, document

    record = dataclasses.replace(make_record(), run_id="7" + ESCAPES + "9" * 5000)
    text = render.terminal(document([build_flow("Demo\x1b[31mFlow", "f.py" + ESCAPES, record)]))
    assert RAW.search(text) is None, text[:500]
    assert max(len(line) for line in text.splitlines()) <= MAX_LINE
    assert "Demo\\x1b[31mFlow" in text


def test_an_error_with_a_huge_message_is_bounded_at_the_command_line(tmp_path):
    record = tmp_path / ("r" * 200 + ".json")
    Path(record).write_text(json.dumps({**json.loads(make_record().to_json()), "flow": "\x1b[2J" * 100_000}))
    r = cli("store", "show", str(record), env={"REPRO_HOME": str(tmp_path / "home")}, timeout=300)
    assert r.code == 2, r.text[:2000]
    _check(r, "record file")
