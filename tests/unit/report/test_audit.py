"""metaflow_repro.report.audit: the terminal text, the JSON and the HTML page with its inline SVG timeline."""

from __future__ import annotations

import dataclasses
import json
import re

from metaflow_repro.model.audit import Audit, AuditEntry, AuditVerdict, Difference, Selection
from metaflow_repro.report.audit import LANES, terminal, timeline_svg, to_html, to_json


def entry(run: str, recorded: str, verdict=AuditVerdict.IDENTICAL, previous="", **fields) -> AuditEntry:
    return AuditEntry(
        run, run.split("@")[0].split("/")[0], run.split("/")[1], recorded, verdict, previous=previous, **fields
    )


ENTRIES = (
    entry("A@a.py/1", "2026-11-01T10:00:00+00:00"),
    entry("A@a.py/2", "2026-11-20T10:00:00+00:00"),
    entry(
        "C@c.py/3",
        "2026-12-01T10:00:00+00:00",
        AuditVerdict.DIFFERENT,
        "identical",
        differences=(Difference("start", "-", "stamp", "1 != 2"),),
        differences_count=3,
        causes=("start read files outside the snapshot",),
    ),
)
AUDIT = Audit(
    "2026-12-07T00:00:00+00:00", "2026-12-07T00:10:00+00:00", "file:///s", "local", "1", "2.19", Selection(), ENTRIES
)


def test_the_terminal_text_names_each_run_what_differed_the_cause_and_the_regression():
    text = terminal(AUDIT, "audits/k.json")
    assert "3 run(s) replayed on local: 2 identical, 0 equivalent, 1 different, 0 replay failed" in text
    assert "C@c.py/3: different (was identical)\n  start/-.stamp: 1 != 2\n  and 2 more artifact(s)\n" in text
    assert "  likely cause: start read files outside the snapshot" in text
    assert "REGRESSION: 1 run(s) that replayed identical in the previous audit no longer do" in text
    assert text.rstrip().endswith("audit kept in the store as audits/k.json")


def test_without_a_regression_the_text_says_so_and_names_no_regression():
    calm = dataclasses.replace(AUDIT, entries=ENTRIES[:2])
    assert "REGRESSION" not in terminal(calm) and "all 2 run(s) replayed identical" in terminal(calm)
    mixed = dataclasses.replace(AUDIT, entries=(*ENTRIES[:2], dataclasses.replace(ENTRIES[2], previous="")))
    assert "1 of 3 run(s) did not replay identical" in terminal(mixed) and "REGRESSION" not in terminal(mixed)


def test_the_json_is_the_document_with_its_key_and_regressions():
    doc = json.loads(to_json(AUDIT, "audits/k.json"))
    assert doc["schema"] == "repro.audit" and doc["key"] == "audits/k.json" and doc["regressions"] == ["C@c.py/3"]


def test_the_timeline_puts_each_run_in_its_verdict_lane_by_date_and_rings_a_regression():
    svg = timeline_svg(AUDIT)
    dots = re.findall(r'<circle cx="([\d.]+)" cy="(\d+)" r="7" fill="(#\w+)"([^>]*)>', svg)
    assert [fill for _, _, fill, _ in dots] == [LANES[AuditVerdict.IDENTICAL]] * 2 + [LANES[AuditVerdict.DIFFERENT]]
    xs = [float(x) for x, _, _, _ in dots]
    assert xs[0] < xs[1] < xs[2] and xs[1] - xs[0] > xs[2] - xs[1]  # 19 days, then 11
    assert dots[0][1] == dots[1][1] != dots[2][1]
    assert "stroke-width" in dots[2][3] and "stroke" not in dots[0][3]
    assert "2026-11-01 10:00" in svg and "2026-12-01 10:00" in svg


def test_every_text_in_the_page_is_escaped_and_nothing_is_fetched():
    hostile = dataclasses.replace(
        ENTRIES[2], recorded_at="<script>alert(1)</script>", causes=('<img src="http://x/">',), error="</pre><b>"
    )
    page = to_html(dataclasses.replace(AUDIT, entries=(hostile,)))
    assert "<script" not in page and "<img" not in page and "</pre><b>" not in page
    assert "&lt;script&gt;" in page and "&lt;img" in page
    assert not re.search(r'(src|href)="(?!#)', page)  # no link leaves the page, no resource is loaded
    assert page.count("<svg") == 1 and 'class="verdict failed"' in page
