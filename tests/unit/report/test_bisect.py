"""metaflow_repro.report.bisect: the HTML page of a bisection, rendered from a hand-made BisectResult
(and from its JSON document), read back with the standard library's HTML parser."""

from __future__ import annotations

import json
from html.parser import HTMLParser

from metaflow_repro.checks.bisect import Outcome, PackageChange, Search
from metaflow_repro.operations.bisect import BisectResult, Tried
from metaflow_repro.report.bisect import to_html
from tests.helpers import make_record, pkg

HOSTILE = "<script>alert(1)</script>"
REASON = 'No solution found: calc==1.1 needs <img src=x onerror="alert(2)"> & more'


class _Sections(HTMLParser):
    """{section id: its table's rows, each a list of cell texts} and {section id: its whole text}."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, list[list[str]]] = {}
        self.text: dict[str, str] = {}
        self.tags: list[str] = []
        self._section = ""
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "section":
            self._section = dict(attrs).get("id") or ""
            self.rows.setdefault(self._section, [])
            self.text.setdefault(self._section, "")
        elif tag == "tr":
            self._row = []
        elif tag == "td" and self._row is not None:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" | ")

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None and self._cell is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row:
            self.rows[self._section].append(self._row)
            self._row = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)
        if self._section:
            self.text[self._section] += data


def parse(page: str) -> _Sections:
    parser = _Sections()
    parser.feed(page)
    return parser


def result() -> BisectResult:
    calc = PackageChange("calc", pkg("calc", "1.0"), pkg("calc", "1.1"), ("train",))
    aux = PackageChange("aux-b", pkg("aux-b", "1.0"), None, ("end",))
    evil = PackageChange(HOSTILE, None, pkg("evil", "6.6"), ("start", "train"))
    changes = (aux, calc, evil)
    tried = [
        Tried(changes, Outcome.FLIPS, "CalcFlow/2", 12.34, "train.model, end.model", steps=("start", "train", "end")),
        Tried((aux, calc), Outcome.UNRESOLVABLE, "", 0.4, REASON),
        Tried((evil,), Outcome.SAME, "CalcFlow/3", 3.0, "", known=True, steps=("start", "train", "end")),
        Tried((calc,), Outcome.FLIPS, "CalcFlow/4", 2.5, "train.model", steps=("train", "end")),
    ]
    search = Search(changes=changes, culprits=(calc,))
    return BisectResult(make_record(), "new <lock>.lock", search, ("train.model", "end.model"), tried, 16.2)


def test_the_page_names_the_culprit_and_shows_every_package_change_and_every_hybrid():
    page = parse(to_html(result()))
    assert (
        page.text["summary"]
        .strip()
        .startswith("train.model differs because of calc 1.0 -> 1.1 (alone; 2 reruns, 16 s)")
    )
    assert "calc 1.0 → 1.1 (steps: train)" in " ".join(page.text["culprits"].split())
    assert page.rows["candidates"] == [
        ["aux-b", "1.0", "(absent)", "end"],
        ["calc culprit", "1.0", "1.1", "train"],
        [HOSTILE, "(absent)", "6.6", "start, train"],
    ]
    assert page.rows["hybrids"] == [
        [
            "1",
            f"aux-b 1.0 (removed) | calc 1.0 -> 1.1 | {HOSTILE} (added) 6.6",
            "flips",
            "start, train, end",
            "12.3",
            "CalcFlow/2",
            "train.model, end.model",
        ],
        ["2", "aux-b 1.0 (removed) | calc 1.0 -> 1.1", "unresolvable", "-", "0.4", "-", " ".join(REASON.split())],
        ["3", f"{HOSTILE} (added) 6.6", "same (known)", "start, train, end", "3.0", "CalcFlow/3", ""],
        ["4", "calc 1.0 -> 1.1", "flips", "train, end", "2.5", "CalcFlow/4", "train.model"],
    ]
    assert REASON in page.text["unresolvable"]  # uv's reason, whole, under the unresolvable hybrids


def test_every_text_from_the_bisection_is_escaped_and_nothing_is_fetched_or_run():
    html = to_html(result())
    assert "<script" not in html and "<img" not in html and 'src="' not in html and "http" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&lt;img src=x onerror=" in html
    assert "new &lt;lock&gt;.lock" in html
    assert set(parse(html).tags) <= {
        "html", "head", "meta", "title", "style", "body", "header", "h1", "h2", "p", "code", "section",
        "ul", "li", "table", "thead", "tbody", "tr", "th", "td", "span", "br", "pre",
    }  # fmt: skip


def test_the_json_document_renders_the_same_page_and_a_bare_one_renders_too():
    done = result()
    assert to_html(json.loads(json.dumps(done.as_dict()))) == to_html(done)
    bare = parse(to_html({"tried": [{"changes": ["x 1 -> 2"], "verdict": "same", "seconds": "soon"}]}))
    assert bare.rows["hybrids"] == [["1", "x 1 -> 2", "same", "-", "-", "-", ""]]
    assert "No package change was found" in bare.text["culprits"]
