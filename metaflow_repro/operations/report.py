"""Report: a recorded run rendered as Markdown, JSON or HTML (the same document ``pytest --repro``
writes for each flow it runs)."""

from __future__ import annotations

from metaflow_repro.operations.records import load, open_named
from metaflow_repro.report import render
from metaflow_repro.report.document import build_flow, document
from metaflow_repro.settings import Settings

FORMATS = ("md", "json", "html")


def report(settings: Settings, store_uri: str | None, ref: str, fmt: str) -> str:
    store = open_named(settings, store_uri)
    record = load(store, ref)
    doc = document([build_flow(record.flow, record.flow_file, record, store=store.uri)])
    return render.RENDER[fmt](doc)
