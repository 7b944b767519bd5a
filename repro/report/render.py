"""Renderers of the report document (``document.py``): a terminal table, Markdown, JSON (schema:
``report.schema.json``, generated from the document's types) and a self-contained HTML page."""

from __future__ import annotations

import html
import json
from pathlib import Path

from tabulate import tabulate

from repro.model.record import PickleStatus
from repro.report.document import ReportDocument
from repro.fsutil import atomic_write

SCHEMA_FILE = Path(__file__).with_name("report.schema.json")


def _as_dict(doc: ReportDocument | dict) -> dict:
    return doc.to_dict() if isinstance(doc, ReportDocument) else doc


# -- renderers -----------------------------------------------------------------------------------

def _counts(d: dict | None, keys) -> str:
    return "-" if d is None else "/".join(str(d.get(k, 0)) for k in keys)


def step_rows(flow: dict) -> list[list]:
    return [[s["step"], (s["env_id"] or "-")[:12], s["python"] or "-", s["packages"],
             _counts(s["artifacts"], ("identical", "equivalent", "different")),
             _counts(s["pickle"], [k.value for k in PickleStatus]), s["outcome"]] for s in flow["steps"]]


PICKLE_NOTE = "pickle ok/warn/fail: checks of the artifacts each step writes, in every step environment that reads them"
STEP_HEADERS = ["step", "env id", "python", "packages", "artifacts id/eq/diff", "pickle ok/warn/fail", "outcome"]


def terminal(doc: ReportDocument | dict) -> str:
    doc = _as_dict(doc)
    parts = []
    for f in doc["flows"]:
        parts.append(f"{f['flow']} ({f['file']}) run {f['run'] or '-'}: {f['status']}")
        parts.append(tabulate(step_rows(f), headers=STEP_HEADERS, tablefmt="simple"))
    if doc["flows"]:
        parts.append(PICKLE_NOTE)
    return "\n".join(parts)


def to_json(doc: ReportDocument | dict) -> str:
    doc = _as_dict(doc)
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def to_markdown(doc: ReportDocument | dict) -> str:
    doc = _as_dict(doc)
    out = [f"# repro report\n\nGenerated {doc['generated_at']}.\n"]
    for f in doc["flows"]:
        out.append(f"## {f['flow']} — {f['status']}\n\nFile `{f['file']}`, run `{f['run'] or '-'}`.\n")
        out.append(tabulate(step_rows(f), headers=STEP_HEADERS, tablefmt="github") + "\n")
        failed = [s for s in f["steps"] if s["message"]]
        for s in failed:
            out.append(f"**{s['step']}**: {s['outcome']}\n\n```\n{s['message']}\n```\n")
        if f["pickle"]:
            out.append("### Pickle compatibility\n")
            rows = [[p["step"], p["task"], p["artifact"], p["reader_env"][:12], ", ".join(p["reader_steps"]),
                     p["status"], "; ".join(x for x in (p["detail"], p["static"]) if x)] for p in f["pickle"]]
            out.append(tabulate(rows, headers=["step", "task", "artifact", "reader env", "read by", "status", "why"],
                                tablefmt="github") + "\n")
        if f["baseline"]:
            diffs = [r for r in f["baseline"]["results"] if r["verdict"] != "identical"]
            out.append(f"### Against {f['baseline']['ref']}: {'same' if f['baseline']['same'] else 'DIFFERENT'}\n")
            for r in diffs:
                out.append(f"- `{r['step']}/{r['task']}.{r['name']}`: **{r['verdict']}** — {r['detail']}")
            out.append("")
        if f["drift"] and any(f["drift"].values()):
            out.append("### Drift\n")
            for kind, lines in f["drift"].items():
                out += [f"- {kind}: {line}" for line in lines]
            out.append("")
    return "\n".join(out) + "\n"


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem;color:#1f2328;background:#fff}
h1{font-size:1.6rem} h2{font-size:1.25rem;margin-top:2rem} h3{font-size:1.05rem}
table{border-collapse:collapse;margin:.5rem 0 1rem} th,td{border:1px solid #d0d7de;padding:.3rem .6rem;text-align:left}
th{background:#f6f8fa} .passed,.ok,.identical,.equivalent{background:#dafbe1} .failed,.fails,.different{background:#ffebe9}
.warning{background:#fff8c5} .not.run{background:#eaeef2} code,pre{font-family:ui-monospace,Menlo,monospace;font-size:.85rem}
pre{background:#f6f8fa;padding:.6rem;white-space:pre-wrap;overflow-wrap:anywhere} .badge{padding:.1rem .5rem;border-radius:.8rem}
"""


def _table(headers, rows, status_col=None) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            cls = f' class="{html.escape(str(cell))}"' if i == status_col else ""
            cells.append(f"<td{cls}>{html.escape(str(cell))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def to_html(doc: ReportDocument | dict) -> str:
    doc = _as_dict(doc)
    parts = [f"<!doctype html><html lang=en><head><meta charset=utf-8><title>repro report</title>"
             f"<style>{_CSS}</style></head><body><h1>repro report</h1><p>Generated {html.escape(doc['generated_at'])}.</p>"]
    for f in doc["flows"]:
        parts.append(f"<h2>{html.escape(f['flow'])} <span class='badge {f['status']}'>{f['status']}</span></h2>"
                     f"<p>File <code>{html.escape(f['file'])}</code>, run <code>{html.escape(f['run'] or '-')}</code></p>")
        parts.append(_table(STEP_HEADERS, step_rows(f), status_col=6))
        for s in f["steps"]:
            if s["message"]:
                parts.append(f"<h3>{html.escape(s['step'])}: {s['outcome']}</h3><pre>{html.escape(s['message'])}</pre>")
        if f["pickle"]:
            parts.append("<h3>Pickle compatibility</h3>")
            rows = [[p["step"], p["task"], p["artifact"], p["reader_env"][:12], ", ".join(p["reader_steps"]),
                     p["status"], "; ".join(x for x in (p["detail"], p["static"]) if x)] for p in f["pickle"]]
            parts.append(_table(["step", "task", "artifact", "reader env", "read by", "status", "why"], rows, status_col=5))
        if f["baseline"]:
            parts.append(f"<h3>Against {html.escape(f['baseline']['ref'])}: "
                         f"{'same' if f['baseline']['same'] else 'different'}</h3>")
            rows = [[r["step"], r["task"], r["name"], r["verdict"], r["detail"]] for r in f["baseline"]["results"]]
            parts.append(_table(["step", "task", "artifact", "verdict", "detail"], rows, status_col=3))
        if f["drift"] and any(f["drift"].values()):
            parts.append("<h3>Drift</h3><ul>" + "".join(
                f"<li><b>{kind}</b>: {html.escape(line)}</li>" for kind, lines in f["drift"].items() for line in lines)
                + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


RENDER = {"md": to_markdown, "json": to_json, "html": to_html}


def write(doc: ReportDocument, folder: Path, stem: str = "repro-report") -> list[Path]:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt, render in RENDER.items():
        path = folder / f"{stem}.{fmt}"
        atomic_write(path, render(doc))
        written.append(path)
    return written
